"""int8: dynamic quantization with ONNX Runtime, and the quality gate against the fp32 graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splitserve.core.errors import ExportError

QUANTIZATIONS = ("int8",)

# The int8 quality gate against the fp32 ONNX graph; each task names the metrics it is gated on
# (`ExportFacts.int8_gate`); override the thresholds with `quality_thresholds`.
# min_cosine / mean_cosine: the lowest / mean cosine similarity of mean-pooled embeddings over the
# texts (feature-extraction); label_agreement: the fraction of labels int8 and fp32 agree on, the
# argmax of the logits per text (text-classification) or per real, non-padding token
# (token-classification).
# Measured on all-MiniLM-L6-v2 (per-channel QInt8, 59 texts): mean cosine 0.989, min 0.963 (on
# one-word texts like "ok"); a min of 0.99 would refuse every int8 MiniLM, so the defaults gate
# the typical text (mean) and the worst one separately.
# top1_agreement: the fraction of texts whose nearest neighbour among the others is the same in
# int8 as in fp32 (does a ranking by int8 vectors keep fp32's?). MiniLM's dynamic int8 keeps
# 0.88-0.92 of the 59 texts (one text is 0.017: near-tied neighbours swap with the CPU's int8
# kernels, so the default floor leaves room); excluding the last layers' FFN output from
# quantization moved it within that noise (0.88-0.92), at +2-11 MB.
DEFAULT_QUALITY_THRESHOLDS = {"min_cosine": 0.95, "mean_cosine": 0.98, "top1_agreement": 0.8, "label_agreement": 0.99}
COSINE_METRICS = ("min_cosine", "mean_cosine", "top1_agreement")


def quality_thresholds_for(quantize: str | None, overrides: dict[str, float] | None) -> dict[str, float]:
    """The gate's thresholds: the defaults, updated with `overrides` (validated)."""
    if quantize is None:
        if overrides:
            raise ExportError("quality_thresholds only apply to a quantized export (quantize='int8')")
        return {}
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize={quantize!r} is not supported; supported: {list(QUANTIZATIONS)}")
    unknown = set(overrides or {}) - set(DEFAULT_QUALITY_THRESHOLDS)
    if unknown:
        raise ExportError(
            f"unknown quality threshold(s) {sorted(unknown)}; known: {sorted(DEFAULT_QUALITY_THRESHOLDS)}"
        )
    return {**DEFAULT_QUALITY_THRESHOLDS, **{k: float(v) for k, v in (overrides or {}).items()}}


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """Dynamic int8 quantization with ONNX Runtime: per-channel signed int8 weights (uint8
    activations quantized at run time, the U8S8 kernels ORT recommends for CPU). MatMul and Gather
    (embeddings) are quantized; the graph is otherwise left as exported (ORT fuses at load time)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = any(f.name != fp32_path.name for f in fp32_path.parent.iterdir())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice at WARNING through the root logger
    try:
        quantize_dynamic(
            fp32_path,
            out_path,
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QInt8,
            use_external_data_format=external,
        )
    finally:
        root.setLevel(level)


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of texts whose nearest neighbour among the others (cosine, normalized rows) is
    the same text in both embeddings: whether a ranking by int8 vectors keeps fp32's."""

    def nearest(x: np.ndarray) -> np.ndarray:
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return sims.argmax(axis=1)

    return float((nearest(a) == nearest(b)).mean())


def _run_batches(session: Any, batches: list[dict[str, np.ndarray]], output: str) -> list[np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    outs = []
    for enc in batches:
        feeds = {n: enc[n] if n in enc else np.zeros_like(enc["input_ids"]) for n in names}
        outs.append(session.run([output], feeds)[0])
    return outs


def check_quantized(
    fp32_path: Path,
    int8_path: Path,
    tokenizer: Any,
    max_length: int,
    gate: tuple[str, ...],
    output: str,
    texts: list[str],
    thresholds: dict[str, float],
    batch_size: int = 16,
) -> dict[str, float]:
    """Run the fp32 and int8 graphs on `texts`; fail when one of the `gate` metrics is past its
    threshold. Returns the metrics (names start with `int8_`)."""
    import onnxruntime as ort

    # Similar lengths batched together, so one long text does not pad every batch.
    order = sorted(texts, key=lambda t: len(tokenizer(t, truncation=True, max_length=max_length)["input_ids"]))
    batches = []
    for i in range(0, len(order), batch_size):
        enc = tokenizer(
            order[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
        batches.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items()})
    results = []
    for path in (fp32_path, int8_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        results.append(_run_batches(session, batches, output))
        del session
    masks = [b["attention_mask"].astype(bool) for b in batches]

    metrics: dict[str, float] = {}
    if set(gate) & set(COSINE_METRICS):
        pooled: list[list[np.ndarray]] = [[], []]
        for ref, got, mask in zip(*results, masks, strict=True):
            weights = mask[..., None].astype(np.float64)
            for side, out in enumerate((ref, got)):
                vectors = (out * weights).sum(1) / weights.sum(1)
                pooled[side].append(vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12))
        a, b = np.concatenate(pooled[0]), np.concatenate(pooled[1])
        cos = (a * b).sum(1)
        metrics = {
            "int8_min_cosine": float(cos.min()),
            "int8_mean_cosine": float(cos.mean()),
            "int8_top1_agreement": top1_agreement(a, b),
        }
    else:
        agree, total = 0, 0
        for ref, got, mask in zip(*results, masks, strict=True):
            same = ref.argmax(-1) == got.argmax(-1)
            if same.ndim == 2:  # token labels: real tokens only
                same = same[mask]
            agree += int(same.sum())
            total += same.size
        metrics = {"int8_label_agreement": agree / total, "int8_label_count": float(total)}
    what = {
        "min_cosine": "lowest cosine similarity of mean-pooled embeddings",
        "mean_cosine": "mean cosine similarity of mean-pooled embeddings",
        "label_agreement": "label agreement",
        "top1_agreement": "nearest-neighbour agreement of mean-pooled embeddings",
    }
    for metric in gate:
        value, threshold = metrics[f"int8_{metric}"], thresholds[metric]
        metrics[f"int8_{metric}_threshold"] = threshold
        if not value >= threshold:
            raise ExportError(
                f"int8 quality gate failed: {metric} = {value:.5f} < threshold {threshold} ({what[metric]} between "
                f"the int8 and fp32 ONNX graphs over {len(texts)} sample texts); refusing to export. "
                f"Export without quantization, or accept the loss with a lower {metric} quality threshold"
            )
    return metrics
