"""feature-extraction: hidden states -> token embeddings (the pipeline's output) or one pooled vector
(mean-pooled as sentence-transformers does, or the first token; pooled in the model tier:
`splitserve.core.pooling`).

A record is a `text`, or the model's own `token_ids` (OpenAI's and TEI's token-id input): used as
given, special tokens included and none added, so that `tokenizer(text)["input_ids"]` gives the
text's own answer (the bundle's prompt template, if any, is applied to texts only: ids are the
whole prompt's); never truncated (there is no telling which ids are special), refused past
`max_length` instead."""

from __future__ import annotations

from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import params as P
from splitserve.core.errors import InvalidInput, record_label
from splitserve.core.pooling import POOLED, pool
from splitserve.core.records import Record, check_records
from splitserve.tasks.base import TRUNCATION, Batch, Encoded, ExportFacts, Stage, Task, encode_texts, truncated_ids


class FeatureExtraction(Task):
    name = "feature-extraction"
    params = (
        *TRUNCATION,
        P.Param("pooling", P.choice("none", "mean", "cls"), "none", "string"),
        P.Param("normalize", P.boolean, False, "boolean"),
    )
    # `text`, unless the record carries the model's `token_ids` instead (`check`).
    fields = ("text", "token_ids")
    result_kind = "embedding"
    example = [0.25, -0.5, 0.125]  # pooled; [tokens, hidden] with pooling "none"
    export = ExportFacts(
        "feature-extraction", ("last_hidden_state",), int8_gate=("min_cosine", "mean_cosine", "top1_agreement")
    )

    def check(self, stage: Stage, records: list[Record], p: dict[str, Any]) -> None:
        check_records(records, stage.limits, (), self.fields)  # text or token_ids: below
        for i, r in enumerate(records):
            where = record_label(i, r.id)
            if r.text is None and r.token_ids is None:
                raise InvalidInput(f"{where}: field 'text' is missing (or give the model's 'token_ids')")
            if r.text is not None and r.token_ids is not None:
                raise InvalidInput(f"{where}: give field 'text' or field 'token_ids', not both")
            if r.text is not None and not r.text.strip():
                raise InvalidInput(f"{where}: field 'text' is empty")
            if r.token_ids is None:
                continue
            vocab = stage.config.vocab_size or len(stage.tokenizer)
            if len(r.token_ids) > p["max_length"]:
                raise InvalidInput(
                    f"{where}: field 'token_ids' has {len(r.token_ids)} ids; the model takes at most "
                    f"{p['max_length']} (token ids are never truncated)"
                )
            bad = next((t for t in r.token_ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise InvalidInput(f"{where}: field 'token_ids' has id {bad}, outside the vocabulary [0, {vocab})")

    def encode(self, stage: Stage, records: list[Record], p: dict[str, Any]) -> Encoded:
        ids = any(r.token_ids is not None for r in records)
        encoded = _encode_with_ids(stage, records, p) if ids else encode_texts(stage, records, p)
        if p["pooling"] != "none":  # the model tier pools: one vector per record travels, not every token's
            encoded.model_params = {"pooling": p["pooling"], "normalize": p["normalize"]}
        return encoded

    def decode(self, stage: Stage, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        if POOLED in batch.outputs:
            vectors = batch.output(POOLED)
            return [{"embedding": vectors[i].astype(np.float32)} for i in range(len(batch.records))]
        hidden, mask = batch.output(stage.config.model_outputs[0]), batch.ctx("attention_mask")
        if p["pooling"] != "none":  # a model tier that returned token vectors (a direct OIP client's request)
            vectors = pool(hidden, mask, p["pooling"], p["normalize"])
            return [{"embedding": vectors[i]} for i in range(len(batch.records))]
        tokens = [hidden[i][mask[i].astype(bool)].astype(np.float32) for i in range(len(batch.records))]
        if p["normalize"]:
            tokens = [t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12) for t in tokens]
        return [{"embedding": t} for t in tokens]

    def to_pb(self, value: Any) -> pb.Embedding:
        array = np.asarray(value, dtype=np.float32)
        return pb.Embedding(shape=list(array.shape), values=array.ravel().tolist())

    def from_pb(self, message: pb.Embedding) -> list[Any]:
        return np.asarray(message.values, dtype=np.float32).reshape(list(message.shape)).tolist()

    def plain(self, value: Any) -> Any:
        return np.asarray(value).tolist()


def _encode_with_ids(stage: Stage, records: list[Record], p: dict[str, Any]) -> Encoded:
    """`encode_texts` for a request with token-id records: the texts tokenized alone, then every
    row padded together as the tokenizer pads (its pad id, its side)."""
    tokenizer = stage.tokenizer
    texts = [i for i, r in enumerate(records) if r.token_ids is None]
    rows: list[dict[str, Any]] = [{"input_ids": r.token_ids or []} for r in records]
    truncated: list[str] = []
    if texts:
        enc = tokenizer(
            [stage.prompted(records[i].text or "") for i in texts],
            truncation=p["truncation"],
            max_length=p["max_length"] if p["truncation"] else None,
        )
        for k, i in enumerate(texts):
            rows[i] = {name: values[k] for name, values in enc.items()}
        truncated = truncated_ids(enc, records, rows=texts)
    width = max(len(row["input_ids"]) for row in rows)
    fills = {
        "input_ids": tokenizer.pad_token_id or 0,
        "attention_mask": 0,
        "token_type_ids": tokenizer.pad_token_type_id,
    }
    padded = {}
    for name, fill in fills.items():
        if name != "token_type_ids" or name in stage.config.model_inputs:
            array = np.full((len(rows), width), fill, dtype=np.int64)
            for i, row in enumerate(rows):
                values = row.get(name, [1 if name == "attention_mask" else 0] * len(row["input_ids"]))
                if tokenizer.padding_side == "left":
                    array[i, width - len(values) :] = values
                else:
                    array[i, : len(values)] = values
            padded[name] = array
    if texts and not p["truncation"]:
        stage.check_lengths({"attention_mask": padded["attention_mask"][texts]}, records, rows=texts)
    return Encoded(
        model_inputs=stage.model_inputs(padded),
        context={"attention_mask": padded["attention_mask"]},
        truncated=truncated,
    )


TASK = FeatureExtraction()
