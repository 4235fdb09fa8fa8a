"""feature-extraction: hidden states -> token embeddings (the pipeline's output) or one pooled vector
(mean-pooled as sentence-transformers does, or the first token; pooled in the model tier:
`splitserve.core.pooling`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import params as P
from splitserve.core.pooling import POOLED, pool
from splitserve.core.records import Record
from splitserve.tasks.base import TRUNCATION, Batch, Encoded, ExportFacts, Stage, Task, encode_texts


class FeatureExtraction(Task):
    name = "feature-extraction"
    params = (
        *TRUNCATION,
        P.Param("pooling", P.choice("none", "mean", "cls"), "none", "string"),
        P.Param("normalize", P.boolean, False, "boolean"),
    )
    result_kind = "embedding"
    example = [0.25, -0.5, 0.125]  # pooled; [tokens, hidden] with pooling "none"
    export = ExportFacts(
        "feature-extraction", ("last_hidden_state",), int8_gate=("min_cosine", "mean_cosine", "top1_agreement")
    )

    def encode(self, stage: Stage, records: list[Record], p: dict[str, Any]) -> Encoded:
        encoded = encode_texts(stage, records, p)
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


TASK = FeatureExtraction()
