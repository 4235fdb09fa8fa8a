"""feature-extraction: hidden states -> token embeddings (the pipeline's output) or one pooled vector
(pooled as sentence-transformers' Pooling does, through a sentence-transformers bundle's Dense
layers and Normalize; pooled in the model tier: `splitserve.core.pooling`).

A record is a `text`, or the model's own `token_ids` (OpenAI's and TEI's token-id input): used as
given, special tokens included and none added, so that `tokenizer(text)["input_ids"]` gives the
text's own answer (the bundle's prompt template, if any, is applied to texts only: ids are the
whole prompt's); never truncated (there is no telling which ids are special), refused past
`max_length` instead."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import params as P
from splitserve.core.bundle import ServingConfig
from splitserve.core.errors import InvalidInput, record_label, shown
from splitserve.core.pooling import POOLED, POOLINGS, pool, read_head
from splitserve.core.records import Record
from splitserve.tasks.base import TRUNCATION, Assets, Batch, Encoded, ExportFacts, Task, encode_texts, truncated_ids


def prompt_name(name: str, value: Any) -> str | None:
    """a name among the bundle's prompts (a sentence-transformers model's), or null: the default prompt."""
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"param {name!r}: expected a string or null, got {shown(value)}")
    return value


class FeatureExtraction(Task):
    name = "feature-extraction"
    params = (
        *TRUNCATION,
        P.Param("pooling", P.choice("none", *POOLINGS), "none", "string"),
        P.Param("normalize", P.boolean, False, "boolean"),
        # Matryoshka: the pooled vector's first N dimensions (renormalized when `normalize`); a
        # sentence-transformers bundle's default is its truncate_dim.
        P.Param("dimensions", P.optional_positive_int, None, "long"),
        # A sentence-transformers bundle's named prompt to put before the texts (encode's prompt_name).
        P.Param("prompt_name", prompt_name, None, "string"),
    )
    # `text`, unless the record carries the model's `token_ids` instead (`check`).
    fields = ("text", "token_ids")
    result_kind = "embedding"
    example = [0.25, -0.5, 0.125]  # pooled; [tokens, hidden] with pooling "none"
    export = ExportFacts(("last_hidden_state",), int8_gate=("min_cosine", "mean_cosine", "top1_agreement"))
    pair_scoring = "cosine"

    def resolve(self, config: ServingConfig, params: dict[str, Any] | None) -> dict[str, Any]:
        resolved = super().resolve(config, params)
        if resolved["pooling"] == "none" and resolved["dimensions"] == config.defaults.get("dimensions"):
            resolved["dimensions"] = None  # the bundle's default cuts pooled vectors; token vectors stay whole
        return resolved

    def check(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> None:
        super().check(assets, records, p)  # a text or token ids, not both
        if p["dimensions"] is not None:
            width = assets.config.pooled_width
            if p["pooling"] == "none":
                raise InvalidInput("param 'dimensions' needs one vector per text: set pooling (e.g. 'mean')")
            if width > 0 and p["dimensions"] > width:
                raise InvalidInput(f"param 'dimensions' is {p['dimensions']}; this model's embeddings have {width}")
        name = p["prompt_name"]
        if name is not None and name not in assets.config.prompts:
            prompts = sorted(assets.config.prompts)
            has = f"this model's prompts are {prompts}" if prompts else "this model has no named prompts"
            raise InvalidInput(f"param 'prompt_name' is {shown(name)}; {has}")
        with_ids = [(i, r.token_ids) for i, r in enumerate(records) if r.token_ids is not None]
        vocab = (assets.config.vocab_size or len(assets.tokenizer)) if with_ids else 0
        for i, ids in with_ids:
            where = record_label(i, records[i].id)
            if len(ids) > p["max_length"]:
                raise InvalidInput(
                    f"{where}: field 'token_ids' has {len(ids)} ids; the model takes at most "
                    f"{p['max_length']} (token ids are never truncated)"
                )
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise InvalidInput(f"{where}: field 'token_ids' has id {bad}, outside the vocabulary [0, {vocab})")

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        if p["prompt_name"] is not None:  # that prompt instead of the default one
            prefix = assets.config.prompts[p["prompt_name"]].replace("{", "{{").replace("}", "}}")
            assets = replace(assets, config=replace(assets.config, prompt_template=f"{prefix}{{prompt}}"))
        ids = any(r.token_ids is not None for r in records)
        encoded = _encode_with_ids(assets, records, p) if ids else encode_texts(assets, records, p)
        if p["pooling"] != "none":  # the model tier pools: one vector per record travels, not every token's
            encoded.model_params = {"pooling": p["pooling"], "normalize": p["normalize"]}
        return encoded

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        if POOLED in batch.outputs:
            vectors = _first_dimensions(batch.output(POOLED), p)
            return [{"embedding": vectors[i].astype(np.float32)} for i in range(len(batch.records))]
        hidden, mask = batch.output(assets.config.model_outputs[0]), batch.ctx("attention_mask")
        if p["pooling"] != "none":  # a model tier that returned token vectors (a direct OIP client's request)
            head = read_head(assets.config.head, None)  # Dense layers run in the model tier only
            vectors = _first_dimensions(pool(hidden, mask, p["pooling"], p["normalize"], head), p)
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


def _first_dimensions(vectors: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """The pooled vectors cut to their first `dimensions` (Matryoshka), renormalized when `normalize`
    (the direction of a normalized vector's first N values is that of the raw vector's)."""
    if p["dimensions"] is None:
        return vectors
    cut = vectors[:, : p["dimensions"]].astype(np.float32)
    if p["normalize"]:
        cut = cut / np.maximum(np.linalg.norm(cut, axis=-1, keepdims=True), 1e-12)
    return cut


def _encode_with_ids(assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
    """`encode_texts` for a request with token-id records: the texts tokenized alone, then every
    row padded together by the tokenizer (its pad id, its side)."""
    tokenizer = assets.tokenizer
    texts = [i for i, r in enumerate(records) if r.token_ids is None]
    ids = [r.token_ids or [] for r in records]
    types = [[0] * len(row) for row in ids]
    truncated: list[str] = []
    if texts:
        enc = tokenizer(
            [assets.prompted(records[i].text or "") for i in texts],
            truncation=p["truncation"],
            max_length=p["max_length"] if p["truncation"] else None,
        )
        for k, i in enumerate(texts):
            ids[i] = enc["input_ids"][k]
            types[i] = enc["token_type_ids"][k] if "token_type_ids" in enc else [0] * len(ids[i])
        truncated = truncated_ids(enc, records, rows=texts)
    tokenizer.deprecation_warnings["Asking-to-pad-a-fast-tokenizer"] = True  # its advice is for texts; these are ids
    padded = tokenizer.pad(
        {"input_ids": ids, "token_type_ids": types}, padding=True, return_attention_mask=True, return_tensors="np"
    )
    if texts and not p["truncation"]:
        assets.check_lengths({"attention_mask": padded["attention_mask"][texts]}, records, rows=texts)
    return Encoded(
        model_inputs=assets.model_inputs(padded),
        context={"attention_mask": padded["attention_mask"].astype(np.int64)},
        truncated=truncated,
    )


TASK = FeatureExtraction()
