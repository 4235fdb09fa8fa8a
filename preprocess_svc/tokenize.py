"""Tokenization stage: records + params -> model inputs and post-processing context.

Pure Python/numpy: no protobuf, no torch. Shared by the preprocess server and the in-process
pyfunc path. `Preprocessor.run` dispatches to one function per kind of task.

Most tasks give the model one row per record. Question answering (a long context split into
overlapping windows) and zero-shot classification (one premise/hypothesis pair per candidate
label) give it several: their context carries `row_record`, the record of each row, so that the
postprocess tier can merge the rows back (the gateway forwards it as any other tensor).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from splitserve import params as params_mod
from splitserve.bundle import ServingConfig
from splitserve.errors import InvalidInput, record_label
from splitserve.params import GENERATION_TASKS
from splitserve.records import (
    ROW_RECORD,
    Limits,
    Record,
    check_qa_records,
    check_text_records,
    check_zero_shot_records,
)

PAIR_TASKS = {"text-classification"}


@dataclass
class Encoded:
    model_inputs: dict[str, np.ndarray]  # what the model tier runs on
    context: dict[str, np.ndarray]  # what the postprocess tier needs besides model outputs
    # Scalars for the model tier (OIP request parameters): text-generation's generation params.
    model_params: dict[str, bool | int | float | str] = field(default_factory=dict)


class Preprocessor:
    def __init__(self, config: ServingConfig, tokenizer: Any, limits: Limits | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.limits = limits or Limits()

    def resolve_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        return params_mod.resolve_for(self.config, params)

    def run(self, records: list[Record], params: dict[str, Any] | None = None) -> Encoded:
        resolved = self.resolve_params(params)
        encode = ENCODERS[self.config.task]
        return encode(self, records, resolved)

    # Helpers shared by the task encoders.

    def model_inputs(self, enc: Any) -> dict[str, np.ndarray]:
        model_inputs = {}
        for name in self.config.model_inputs:
            if name in enc:
                model_inputs[name] = np.asarray(enc[name], dtype=np.int64)
            elif name == "token_type_ids":
                model_inputs[name] = np.zeros_like(enc["input_ids"], dtype=np.int64)
            else:
                raise RuntimeError(f"the tokenizer does not produce model input {name!r}")
        return model_inputs

    def check_lengths(
        self, enc: Any, records: list[Record], rows: list[int] | None = None, field: str = "text"
    ) -> None:
        """Refuse untruncated rows longer than the model takes (`rows`: the record of each row)."""
        lengths = enc["attention_mask"].sum(axis=1)
        for row, n in enumerate(lengths):
            if n > self.config.max_length:
                i = row if rows is None else rows[row]
                raise InvalidInput(
                    f"{record_label(i, records[i].id)}: field {field!r} is {int(n)} tokens long; the model "
                    f"takes at most {self.config.max_length} (set param truncation=true)"
                )


def encode_texts(pre: Preprocessor, records: list[Record], p: dict[str, Any]) -> Encoded:
    """feature-extraction, text-classification, token-classification: one row per record."""
    task = pre.config.task
    has_pairs = check_text_records(records, pre.limits, allow_pairs=task in PAIR_TASKS)
    texts = [r.text for r in records]
    pairs = [r.text_pair for r in records] if has_pairs else None
    want_offsets = task == "token-classification"
    enc = pre.tokenizer(
        texts,
        pairs,
        padding=True,  # dynamic padding: to the longest record of this request
        truncation=p["truncation"],
        max_length=p["max_length"] if p["truncation"] else None,
        return_tensors="np",
        return_offsets_mapping=want_offsets,
        return_special_tokens_mask=want_offsets,
    )
    if not p["truncation"]:
        pre.check_lengths(enc, records)
    context = {"attention_mask": enc["attention_mask"].astype(np.int64)}
    if want_offsets:
        context["input_ids"] = enc["input_ids"].astype(np.int64)
        context["offset_mapping"] = enc["offset_mapping"].astype(np.int64)
        context["special_tokens_mask"] = enc["special_tokens_mask"].astype(np.int64)
    return Encoded(model_inputs=pre.model_inputs(enc), context=context)


def encode_fill_mask(pre: Preprocessor, records: list[Record], p: dict[str, Any]) -> Encoded:
    """fill-mask: one row per record; every record must keep at least one mask token."""
    tok = pre.tokenizer
    if tok.mask_token_id is None:
        raise RuntimeError("the bundle's tokenizer defines no mask token")
    check_text_records(records, pre.limits, allow_pairs=False)
    enc = tok(
        [r.text for r in records],
        padding=True,
        truncation=p["truncation"],
        max_length=p["max_length"] if p["truncation"] else None,
        return_tensors="np",
    )
    if not p["truncation"]:
        pre.check_lengths(enc, records)
    ids = enc["input_ids"].astype(np.int64)
    for i, record in enumerate(records):
        if not (ids[i] == tok.mask_token_id).any():
            where = record_label(i, record.id)
            if tok.mask_token in (record.text or ""):
                raise InvalidInput(
                    f"{where}: field 'text' has its mask token {tok.mask_token!r} past the first "
                    f"{p['max_length']} tokens, where it is truncated"
                )
            raise InvalidInput(f"{where}: field 'text' has no mask token {tok.mask_token!r}")
    context = {"input_ids": ids, "attention_mask": enc["attention_mask"].astype(np.int64)}
    return Encoded(model_inputs=pre.model_inputs(enc), context=context)


def encode_question_answering(pre: Preprocessor, records: list[Record], p: dict[str, Any]) -> Encoded:
    """question-answering, as the pipeline's preprocess: question and context as a pair, the
    context cut into windows of `max_seq_len` tokens overlapping by `doc_stride` (one model row
    per window). Context for the postprocess tier, per row and token: `p_mask` (1: cannot be part
    of an answer), `offset_mapping` (characters of the token in the context) and `word_chars`
    (characters of the token's whole word, -1 where the pipeline falls back to the token's own)."""
    check_qa_records(records, pre.limits)
    tok = pre.tokenizer
    question_first = tok.padding_side == "right"
    firsts = [(r.question if question_first else r.context) or "" for r in records]
    seconds = [(r.context if question_first else r.question) or "" for r in records]
    kwargs = dict(
        truncation="only_second" if question_first else "only_first",
        max_length=p["max_seq_len"],
        stride=p["doc_stride"],
        return_token_type_ids=True,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    try:
        enc = tok(firsts, seconds, padding=True, return_tensors="np", **kwargs)
    except Exception:  # noqa: BLE001 - the tokenizers library raises a bare Exception; find the record
        for i, record in enumerate(records):
            try:
                tok(firsts[i], seconds[i], **kwargs)
            except Exception as exc:  # noqa: BLE001
                raise InvalidInput(
                    f"{record_label(i, record.id)}: field 'question' leaves no room for the context in windows of "
                    f"max_seq_len={p['max_seq_len']} tokens overlapping by doc_stride={p['doc_stride']} ({exc})"
                ) from None
        raise
    ids = enc["input_ids"].astype(np.int64)
    p_mask = np.ones_like(ids)
    word_chars = np.full((*ids.shape, 2), -1, dtype=np.int64)
    context_index = 1 if question_first else 0
    for row, encoding in enumerate(enc.encodings):
        # The pipeline's p_mask: question_first -> everything but the context; else nothing.
        p_mask[row] = [s != 1 if question_first else 0 for s in encoding.sequence_ids]
        if tok.cls_token_id is not None:
            p_mask[row][ids[row] == tok.cls_token_id] = 0
        # The pipeline's get_indices(align_to_words=True): the characters of the token's word,
        # looked up in the context sequence; any failure falls back to the token's offsets.
        spans: dict[int, Any] = {}
        for t, word in enumerate(encoding.word_ids):
            if word is None:
                continue
            if word not in spans:
                spans[word] = encoding.word_to_chars(word, sequence_index=context_index)
            if spans[word] is not None:
                word_chars[row, t] = spans[word]
    context = {
        ROW_RECORD: enc["overflow_to_sample_mapping"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
        "p_mask": p_mask,
        "offset_mapping": enc["offset_mapping"].astype(np.int64),
        "word_chars": word_chars,
    }
    return Encoded(model_inputs=pre.model_inputs(enc), context=context)


def encode_zero_shot(pre: Preprocessor, records: list[Record], p: dict[str, Any]) -> Encoded:
    """zero-shot-classification, as the pipeline's preprocess: one (text, hypothesis) pair per
    record and candidate label, the text truncated (only_first) so that the hypothesis is kept."""
    labels = check_zero_shot_records(records, pre.limits, p["candidate_labels"])
    premises, hypotheses, rows, row_labels = [], [], [], []
    for i, (record, mine) in enumerate(zip(records, labels, strict=True)):
        for label in mine:
            premises.append(record.text)
            hypotheses.append(p["hypothesis_template"].format(label))
            rows.append(i)
            row_labels.append(label)
    truncation = "only_first" if p["truncation"] else False
    max_length = p["max_length"] if p["truncation"] else None
    try:
        enc = pre.tokenizer(
            premises, hypotheses, padding=True, truncation=truncation, max_length=max_length, return_tensors="np"
        )
    except Exception:  # noqa: BLE001 - the tokenizers library raises a bare Exception; find the record
        for premise, hypothesis, i, label in zip(premises, hypotheses, rows, row_labels, strict=True):
            try:
                pre.tokenizer(premise, hypothesis, truncation=truncation, max_length=max_length)
            except Exception:  # noqa: BLE001
                short = label if len(label) <= 40 else label[:40] + "…"
                raise InvalidInput(
                    f"{record_label(i, records[i].id)}: field 'candidate_labels': the hypothesis for label "
                    f"{short!r} leaves no room for field 'text' within {max_length} tokens"
                ) from None
        raise
    if not p["truncation"]:
        pre.check_lengths(enc, records, rows)
    context = {
        ROW_RECORD: np.asarray(rows, dtype=np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
    }
    return Encoded(model_inputs=pre.model_inputs(enc), context=context)


def prompt_texts(config: ServingConfig, records: list[Record]) -> list[str]:
    """Generation prompts: the records' texts in the source model's MLflow prompt_template, after
    the pipeline's `prefix` (encoder-decoders, e.g. T5's "translate English to German: ")."""
    template = config.prompt_template
    prefix = (config.generation or {}).get("prefix") or ""
    return [prefix + (template.format(prompt=r.text) if template else r.text or "") for r in records]


def encode_generation(pre: Preprocessor, records: list[Record], p: dict[str, Any]) -> Encoded:
    """The generation tasks: each prompt tokenized as the pipeline does (the tokenizer's own special
    tokens, no truncation), left-padded with 0 into one [rows, tokens] array; the generation params
    go to the model tier, stop strings as their token ids. A decoder-only LM's prompt and new
    tokens must fit in its positions; an encoder-decoder's prompt in its encoder's."""
    check_text_records(records, pre.limits, allow_pairs=False)
    prompts = prompt_texts(pre.config, records)
    ids = pre.tokenizer(prompts)["input_ids"]
    decoder_only = not pre.config.encoder_decoder
    for i, row in enumerate(ids):
        where = record_label(i, records[i].id)
        if not row:
            raise InvalidInput(f"{where}: field 'text' makes no tokens")
        if decoder_only and len(row) + p["max_new_tokens"] > pre.config.max_length:
            raise InvalidInput(
                f"{where}: field 'text' is {len(row)} tokens long; with max_new_tokens={p['max_new_tokens']} "
                f"that exceeds the model's maximum of {pre.config.max_length} tokens"
            )
        if not decoder_only and len(row) > pre.config.max_length:
            raise InvalidInput(
                f"{where}: field 'text' is {len(row)} tokens long, over the model's maximum of "
                f"{pre.config.max_length} tokens (the pipeline does not truncate it either)"
            )
    width = max(len(row) for row in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    model_params: dict[str, bool | int | float | str] = {
        "max_new_tokens": p["max_new_tokens"],
        "do_sample": p["do_sample"],
        "temperature": p["temperature"],
        "top_k": p["top_k"] or 0,
        "top_p": p["top_p"],
        "repetition_penalty": p["repetition_penalty"],
        "num_beams": p["num_beams"],
        "length_penalty": p["length_penalty"],
        "early_stopping": str(p["early_stopping"]).lower(),
        "no_repeat_ngram_size": p["no_repeat_ngram_size"],
        "min_new_tokens": p["min_new_tokens"],
    }
    if p["seed"] is not None:
        model_params["seed"] = p["seed"]
    if p["stop"]:
        stops = [pre.tokenizer.encode(s, add_special_tokens=False) for s in p["stop"]]
        model_params["stop_ids"] = json.dumps([ids for ids in stops if ids])
    # Postprocess needs the prompt's tokens only to cut a decoder-only LM's prompt off its text.
    context = {"input_ids": input_ids, "attention_mask": mask} if decoder_only else {}
    return Encoded(
        model_inputs={"input_ids": input_ids, "attention_mask": mask}, context=context, model_params=model_params
    )


Encoder = Callable[[Preprocessor, list[Record], dict[str, Any]], Encoded]
ENCODERS: dict[str, Encoder] = {
    "feature-extraction": encode_texts,
    "text-classification": encode_texts,
    "token-classification": encode_texts,
    "fill-mask": encode_fill_mask,
    "question-answering": encode_question_answering,
    "zero-shot-classification": encode_zero_shot,
    **dict.fromkeys(GENERATION_TASKS, encode_generation),
}
