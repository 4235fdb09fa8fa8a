"""Postprocessing stage: model outputs + context -> one typed result per record.

Pure Python/numpy: no protobuf, no torch. Shared by the postprocess server and the in-process
pyfunc path. `Postprocessor.run` checks the tensors and dispatches to one function per task;
the decoding itself lives in `decoders/`. Results are dicts with one key, named for the result
kind: `labels`, `entities`, `embedding`, `filled_masks`, `answers`, `zero_shot` or `generated`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from postprocess_svc.decoders.classification import decode_labels, default_function
from postprocess_svc.decoders.embeddings import decode_embedding
from splitserve import params as params_mod
from splitserve.bundle import ServingConfig
from splitserve.errors import InvalidInput, record_label
from splitserve.params import ENCODER_DECODER_TASKS
from splitserve.records import ROW_RECORD, Record

NEEDS_TOKENIZER = {"token-classification", "fill-mask", "text-generation", *ENCODER_DECODER_TASKS}
MULTI_ROW = {"question-answering", "zero-shot-classification"}  # several model rows per record


@dataclass
class Batch:
    """One request's records, model outputs and context, checked: every tensor has one row per
    model row in dim 0 (one per record, or as `row_record` maps them)."""

    records: list[Record]
    outputs: dict[str, np.ndarray]
    context: dict[str, np.ndarray]
    rows: int

    def output(self, name: str) -> np.ndarray:
        if name not in self.outputs:
            raise InvalidInput(f"model output {name!r} is missing; got {sorted(self.outputs)}")
        return _check_rows(name, self.outputs[name], self.rows)

    def ctx(self, name: str) -> np.ndarray:
        if name not in self.context:
            raise InvalidInput(f"context tensor {name!r} is missing; got {sorted(self.context)}")
        return _check_rows(name, self.context[name], self.rows)

    def record_rows(self) -> list[np.ndarray]:
        """The model rows of each record, from `row_record` (non-decreasing, every record has one)."""
        mapping = self.ctx(ROW_RECORD)
        n = len(self.records)
        if mapping.ndim != 1 or np.any(np.diff(mapping) < 0) or not np.array_equal(np.unique(mapping), np.arange(n)):
            raise InvalidInput(f"context tensor {ROW_RECORD!r} does not map rows onto the {n} records in order")
        return [np.nonzero(mapping == i)[0] for i in range(n)]


def _check_rows(name: str, array: np.ndarray, n: int) -> np.ndarray:
    if array.ndim == 0 or array.shape[0] != n:
        raise InvalidInput(f"tensor {name!r} has shape {list(array.shape)}; expected {n} rows in dim 0")
    return array


class Postprocessor:
    def __init__(self, config: ServingConfig, tokenizer: Any = None):
        if config.task in NEEDS_TOKENIZER and tokenizer is None:
            raise ValueError(f"task {config.task} needs the bundle's tokenizer")
        self.config = config
        self.tokenizer = tokenizer

    def run(
        self,
        records: list[Record],
        params: dict[str, Any] | None,
        outputs: dict[str, np.ndarray],
        context: dict[str, np.ndarray],
    ) -> list[dict[str, Any]]:
        task = self.config.task
        p = params_mod.resolve_for(self.config, params)
        if task not in DECODERS:
            raise InvalidInput(f"task {task!r} is not supported by this postprocess tier")
        rows = len(records)
        if task in MULTI_ROW:
            if ROW_RECORD not in context:
                raise InvalidInput(f"context tensor {ROW_RECORD!r} is missing; got {sorted(context)}")
            rows = int(np.asarray(context[ROW_RECORD]).shape[0])
        return DECODERS[task](self, Batch(records, outputs, context, rows), p)

    @property
    def main_output(self) -> str:
        return self.config.model_outputs[0]


def feature_extraction(post: Postprocessor, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
    hidden, mask = batch.output(post.main_output), batch.ctx("attention_mask")
    return [
        {"embedding": decode_embedding(hidden[i], mask[i], p["pooling"], p["normalize"])}
        for i in range(len(batch.records))
    ]


def text_classification(post: Postprocessor, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
    logits = batch.output(post.main_output)
    id2label = post.config.id2label or {}
    function = p["function_to_apply"]
    if function == "default":
        function = default_function(post.config.problem_type, logits.shape[-1])
    return [{"labels": decode_labels(logits[i], id2label, function, p["top_k"])} for i in range(len(batch.records))]


def token_classification(post: Postprocessor, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
    from postprocess_svc.decoders.ner import decode_entities

    logits, mask = batch.output(post.main_output), batch.ctx("attention_mask")
    ids, offsets, special = batch.ctx("input_ids"), batch.ctx("offset_mapping"), batch.ctx("special_tokens_mask")
    results = []
    for i, record in enumerate(batch.records):
        keep = mask[i].astype(bool)
        entities = decode_entities(
            logits[i][keep],
            ids[i][keep],
            offsets[i][keep],
            special[i][keep],
            record.text or "",
            post.tokenizer,
            post.config.id2label or {},
            aggregation_strategy=p["aggregation_strategy"],
            ignore_labels=p["ignore_labels"],
        )
        results.append({"entities": entities})
    return results


def fill_mask(post: Postprocessor, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
    from postprocess_svc.decoders.fill_mask import decode_masks, target_ids

    logits, mask, ids = batch.output(post.main_output), batch.ctx("attention_mask"), batch.ctx("input_ids")
    targets = target_ids(post.tokenizer, p["targets"]) if p["targets"] else None
    results = []
    for i in range(len(batch.records)):
        keep = mask[i].astype(bool)
        fills = decode_masks(logits[i][: len(keep)][keep], ids[i][keep], post.tokenizer, p["top_k"], targets)
        results.append({"filled_masks": fills})
    return results


def question_answering(post: Postprocessor, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
    from postprocess_svc.decoders.question_answering import Window, decode_answers

    start_name, end_name = post.config.model_outputs[:2]
    start, end = batch.output(start_name), batch.output(end_name)
    mask, p_mask = batch.ctx("attention_mask"), batch.ctx("p_mask")
    offsets, word_chars = batch.ctx("offset_mapping"), batch.ctx("word_chars")
    results = []
    for record, rows in zip(batch.records, batch.record_rows(), strict=True):
        windows = []
        for row in rows:
            # Real tokens only (the pipeline runs each window unpadded). A batching model tier
            # may return the logits padded to a longer batch: cut them to this request's length.
            keep = mask[row].astype(bool)
            n = len(keep)
            windows.append(
                Window(
                    start=start[row][:n][keep],
                    end=end[row][:n][keep],
                    p_mask=p_mask[row][keep],
                    attention_mask=mask[row][keep],
                    offsets=offsets[row][keep],
                    word_chars=word_chars[row][keep],
                )
            )
        answers = decode_answers(
            windows,
            record.context or "",
            top_k=p["top_k"],
            handle_impossible_answer=p["handle_impossible_answer"],
            max_answer_len=p["max_answer_len"],
            align_to_words=p["align_to_words"],
        )
        results.append({"answers": answers})
    return results


def zero_shot(post: Postprocessor, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
    from postprocess_svc.decoders.zero_shot import decode_zero_shot, entailment_id

    logits = batch.output(post.main_output)
    entailment = entailment_id(post.config.id2label or {})
    results = []
    for i, (record, rows) in enumerate(zip(batch.records, batch.record_rows(), strict=True)):
        labels = record.candidate_labels or p["candidate_labels"] or []
        if len(rows) != len(labels):
            raise InvalidInput(
                f"{record_label(i, record.id)}: {len(rows)} model rows for {len(labels)} candidate labels"
            )
        decoded = decode_zero_shot(record.text or "", labels, logits[rows], entailment, p["multi_label"])
        results.append({"zero_shot": decoded})
    return results


def text_generation(post: Postprocessor, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
    from postprocess_svc.decoders.generation import decode_generated
    from preprocess_svc.tokenize import prompt_texts

    generated, ids, mask = batch.output("generated_ids"), batch.ctx("input_ids"), batch.ctx("attention_mask")
    prompts = prompt_texts(post.config, batch.records)
    results = []
    for i, prompt in enumerate(prompts):
        new = generated[i]
        new = new[new >= 0]  # -1 pads the rows that stopped early
        text = decode_generated(
            post.tokenizer, ids[i][mask[i].astype(bool)].tolist(), new.tolist(), prompt, p["return_full_text"]
        )
        if (post.config.generation or {}).get("collapse_whitespace"):  # MLflow's model_config option
            text["generated_text"] = " ".join(text["generated_text"].split())
        results.append({"generated": [text]})
    return results


def seq2seq_generation(post: Postprocessor, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
    """text2text-generation, summarization, translation: the decoder's tokens as the pipeline
    decodes them (its `generated_text` / `summary_text` / `translation_text`)."""
    from postprocess_svc.decoders.generation import decode_seq2seq

    generated = batch.output("generated_ids")
    start = int((post.config.generation or {})["decoder_start_token_id"])
    results = []
    for row in generated:
        new = row[row >= 0].tolist()  # -1 pads the rows that stopped early
        results.append({"generated": [decode_seq2seq(post.tokenizer, start, new)]})
    return results


Decoder = Callable[[Postprocessor, Batch, dict[str, Any]], list[dict[str, Any]]]
DECODERS: dict[str, Decoder] = {
    "feature-extraction": feature_extraction,
    "text-classification": text_classification,
    "token-classification": token_classification,
    "fill-mask": fill_mask,
    "question-answering": question_answering,
    "zero-shot-classification": zero_shot,
    "text-generation": text_generation,
    **dict.fromkeys(ENCODER_DECODER_TASKS, seq2seq_generation),
}
