"""The int8 quality gate: what an int8 graph's outputs must keep of the fp32 graph's on the same
inputs, and the reference a bundle carries so that the model tier repeats the gate on the CPU it
serves on (int8 kernels differ between CPUs: with AVX2 or AVX-512 but no VNNI, ONNX Runtime's
u8s8 products can saturate, so a graph that passed on one CPU can rank badly on another).

The gate compares summaries of one output (`summarize`): for the cosine metrics, each text's
mean-pooled, normalized vector; for `label_agreement`, each text's (or each real token's) argmax.
Export writes the fp32 graph's summaries and the inputs it ran (`Int8Reference`) into
`serving.json`; the model tier runs its int8 graph on the same inputs, batched the same way, and
checks the same thresholds (`model_svc.backends.check_int8`).
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# min_cosine / mean_cosine: the lowest / mean cosine similarity of mean-pooled embeddings over the
# texts (feature-extraction); label_agreement: the fraction of labels int8 and fp32 agree on, the
# argmax of the logits per text (text-classification) or per real, non-padding token
# (token-classification); top1_agreement: the fraction of texts whose nearest neighbour among the
# others is the same in int8 as in fp32 (does a ranking by int8 vectors keep fp32's?).
# Measured on all-MiniLM-L6-v2 (per-channel int8 weights of 7 bits, 59 texts, an AVX2 CPU): mean
# cosine 0.989, min 0.966 (on one-word texts like "ok"), top1 0.88; a min of 0.99 would refuse
# every int8 MiniLM, so the defaults gate the typical text (mean) and the worst one separately.
# top1_agreement's default (0.97) is the ranking promise: measured on the gate corpus (texts held
# apart from static quantization's calibration texts, `splitserve.export.corpus`); MiniLM's int8
# candidates and what each keeps: benchmarks/int8-candidates.md.
DEFAULT_QUALITY_THRESHOLDS = {"min_cosine": 0.95, "mean_cosine": 0.98, "top1_agreement": 0.97, "label_agreement": 0.99}
COSINE_METRICS = ("min_cosine", "mean_cosine", "top1_agreement")
METRIC_MEANINGS = {
    "min_cosine": "lowest cosine similarity of mean-pooled embeddings",
    "mean_cosine": "mean cosine similarity of mean-pooled embeddings",
    "label_agreement": "label agreement",
    "top1_agreement": "nearest-neighbour agreement of mean-pooled embeddings",
}


def summarize(output: np.ndarray, mask: np.ndarray, gate: tuple[str, ...] | list[str]) -> np.ndarray:
    """What the gate compares of one batch's output: mean-pooled, normalized vectors (float64,
    [rows, width]) for the cosine metrics, else the labels (int64): one per row, or one per real
    token of a token-level output."""
    if set(gate) & set(COSINE_METRICS):
        weights = mask[..., None].astype(np.float64)
        vectors = (output * weights).sum(1) / weights.sum(1)
        return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)
    labels = output.argmax(-1)
    return labels[mask.astype(bool)] if labels.ndim == 2 else labels


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of texts whose nearest neighbour among the others (cosine, normalized rows) is
    the same text in both embeddings: whether a ranking by int8 vectors keeps fp32's."""

    def nearest(x: np.ndarray) -> np.ndarray:
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return sims.argmax(axis=1)

    return float((nearest(a) == nearest(b)).mean())


def gate_metrics(reference: np.ndarray, got: np.ndarray, gate: tuple[str, ...] | list[str]) -> dict[str, float]:
    """The gate's metrics (names start with `int8_`) from the fp32 and int8 summaries of every batch."""
    if set(gate) & set(COSINE_METRICS):
        cos = (reference * got).sum(1)
        return {
            "int8_min_cosine": float(cos.min()),
            "int8_mean_cosine": float(cos.mean()),
            "int8_top1_agreement": top1_agreement(reference, got),
        }
    return {"int8_label_agreement": float((reference == got).mean()), "int8_label_count": float(reference.size)}


def gate_failures(
    metrics: dict[str, float], gate: tuple[str, ...] | list[str], thresholds: dict[str, float]
) -> list[str]:
    """`metric = value < threshold (what it measures)` for each gated metric past its threshold."""
    return [
        f"{metric} = {metrics[f'int8_{metric}']:.5f} < threshold {thresholds[metric]} ({METRIC_MEANINGS[metric]})"
        for metric in gate
        if not metrics[f"int8_{metric}"] >= thresholds[metric]
    ]


def pack(array: np.ndarray) -> dict[str, Any]:
    """An array as JSON: little-endian bytes in base64, with its dtype and shape."""
    array = np.ascontiguousarray(array)
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return {
        "dtype": array.dtype.str.lstrip("<>|="),
        "shape": list(array.shape),
        "data": base64.b64encode(data).decode(),
    }


def unpack(packed: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(packed["dtype"]).newbyteorder("<")
    return (
        np.frombuffer(base64.b64decode(packed["data"]), dtype=dtype)
        .reshape(packed["shape"])
        .astype(dtype.newbyteorder("="))
    )


def padded_feeds(
    batches: list[list[list[int]]], pad_id: int, input_names: list[str] | set[str]
) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Batches of token-id rows as graph inputs (right-padded with `pad_id`, token types 0), each
    with its attention mask; only the inputs the graph takes."""
    out = []
    for rows in batches:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        out.append(({k: v for k, v in feeds.items() if k in input_names}, mask))
    return out


@dataclass
class Int8Reference:
    """What the model tier needs to repeat the int8 gate: the gated output and metrics, their
    thresholds, the inputs (each batch's rows of token ids, unpadded; the mask is 1 on them and the
    token types 0), the fp32 graph's summaries of every batch, and what export measured on its CPU."""

    output: str
    gate: list[str]
    thresholds: dict[str, float]
    pad_id: int
    batches: list[list[list[int]]]
    reference: dict[str, Any]  # `pack`ed summaries, every batch's in order
    export_metrics: dict[str, float] = field(default_factory=dict)
    export_cpu: list[str] = field(default_factory=list)
    # every int8 candidate export tried, in order: its name, gate metrics, records/s over the
    # gate's batches on the export's CPU and that over fp32's, and whether it passed
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def feeds(self, input_names: list[str] | set[str]) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Each batch as graph inputs, padded as export padded it, with its attention mask."""
        return padded_feeds(self.batches, self.pad_id, input_names)

    def check(self, outputs: list[np.ndarray], masks: list[np.ndarray]) -> tuple[dict[str, float], list[str]]:
        """The metrics of the int8 graph's `outputs` (one per batch of `feeds`) and the gate's failures."""
        got = np.concatenate([summarize(o, m, self.gate) for o, m in zip(outputs, masks, strict=True)])
        metrics = gate_metrics(unpack(self.reference), got, self.gate)
        return metrics, gate_failures(metrics, self.gate, self.thresholds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Int8Reference:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
