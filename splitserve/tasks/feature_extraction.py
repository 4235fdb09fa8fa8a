"""feature-extraction: hidden states -> token embeddings (the pipeline's output) or one pooled vector."""

from __future__ import annotations

from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import params as P
from splitserve.core.records import Record
from splitserve.tasks.base import TRUNCATION, Batch, Encoded, ExportFacts, Stage, Task, encode_texts


def pooled(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """One record's [T, H] hidden states (padded) and [T] attention mask -> float32 array.

    pooling "none" gives [tokens, H] (the pipeline's output for this record), "mean" the
    mask-weighted mean (sentence-transformers' mean pooling), "cls" the first token. normalize
    divides by the L2 norm (torch.nn.functional.normalize's eps=1e-12).
    """
    tokens = hidden[mask.astype(bool)].astype(np.float32)
    if pooling == "mean":
        out = tokens.sum(axis=0) / max(float(len(tokens)), 1e-9)
    elif pooling == "cls":
        out = tokens[0]
    else:
        out = tokens
    if normalize:
        norm = np.linalg.norm(out, axis=-1, keepdims=True)
        out = out / np.maximum(norm, 1e-12)
    return out.astype(np.float32)


class FeatureExtraction(Task):
    name = "feature-extraction"
    params = (
        *TRUNCATION,
        P.Param("pooling", P.choice("none", "mean", "cls"), "none", "string"),
        P.Param("normalize", P.boolean, False, "boolean"),
    )
    result_kind = "embedding"
    example = [0.25, -0.5, 0.125]  # pooled; [tokens, hidden] with pooling "none"
    export = ExportFacts("feature-extraction", ("last_hidden_state",), int8_gate=("min_cosine", "mean_cosine"))

    def encode(self, stage: Stage, records: list[Record], p: dict[str, Any]) -> Encoded:
        return encode_texts(stage, records, p)

    def decode(self, stage: Stage, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        hidden, mask = batch.output(stage.config.model_outputs[0]), batch.ctx("attention_mask")
        return [
            {"embedding": pooled(hidden[i], mask[i], p["pooling"], p["normalize"])} for i in range(len(batch.records))
        ]

    def to_pb(self, value: Any) -> pb.Embedding:
        array = np.asarray(value, dtype=np.float32)
        return pb.Embedding(shape=list(array.shape), values=array.ravel().tolist())

    def from_pb(self, message: pb.Embedding) -> list[Any]:
        return np.asarray(message.values, dtype=np.float32).reshape(list(message.shape)).tolist()

    def plain(self, value: Any) -> Any:
        return np.asarray(value).tolist()


TASK = FeatureExtraction()
