"""int8: dynamic quantization with ONNX Runtime, and the quality gate against the fp32 graph
(whose reference the bundle keeps, for the model tier to repeat on its own CPU)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_svc.batching import DEFAULT_MAX_PAD_FRACTION
from splitserve.core import cpu
from splitserve.core.errors import ExportError
from splitserve.core.quality import DEFAULT_QUALITY_THRESHOLDS, Int8Reference, pack, summarize

QUANTIZATIONS = ("int8",)

# The gate's metrics and default thresholds live with the check the model tier repeats
# (`splitserve.core.quality`); each task names the metrics it is gated on (`ExportFacts.int8_gate`);
# override the thresholds with `quality_thresholds`. MiniLM's dynamic int8 keeps 0.88-0.93 of the
# 59 texts' nearest neighbours (near-tied neighbours swap with the CPU's int8 kernels, so the
# default floor leaves room); excluding the last layers' FFN output from quantization moved it
# within that noise, at +2-11 MB.


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


# A transformer layer's index in an exported node's name (/encoder/layer.5/..., /model/layers.3/...).
_LAYER = re.compile(r"[./](?:layer|layers|h|block|blocks)\.(\d+)[./]")
_ATTENTION = re.compile(r"attention|attn", re.IGNORECASE)
_HEAD = re.compile(r"pooler|classifier|score|lm_head|qa_outputs", re.IGNORECASE)


def remedies(fp32_path: Path) -> list[tuple[str, list[str]]]:
    """The quantizations to try, fastest first, as (what stays fp32, the MatMul nodes it is):
    every product quantized; then the most sensitive ones left in fp32 (the last layer's
    feed-forward products, the last two layers', the whole last layer with the task head)."""
    import onnx

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    layers: dict[int, list[str]] = {}
    head = []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        found = _LAYER.search(node.name)
        if found:
            layers.setdefault(int(found.group(1)), []).append(node.name)
        elif _HEAD.search(node.name):
            head.append(node.name)
    out: list[tuple[str, list[str]]] = [("nothing", [])]
    if not layers:
        return out
    order = sorted(layers)

    def ffn(i: int) -> list[str]:
        return [n for n in layers[i] if not _ATTENTION.search(n)]

    candidates = [("the last layer's feed-forward", ffn(order[-1]))]
    if len(order) > 1:
        candidates.append(("the last two layers' feed-forward", ffn(order[-2]) + ffn(order[-1])))
    candidates.append(("the last layer and the head", layers[order[-1]] + head))
    for what, nodes in candidates:
        if nodes and nodes != out[-1][1]:
            out.append((what, nodes))
    return out


# The int8 weight formats, fastest first, both right on every x86-64 CPU. ONNX Runtime's U8S8
# products (uint8 activations x int8 weights) saturate on CPUs without VNNI (AVX2, AVX-512 without
# VNNI) when weights use all 8 bits: a tiny BERT's nearest-neighbour agreement with fp32 fell to
# 0.61 on an AVX2 CPU (0.92 with 7 bits). 7-bit weights (`reduce_range`) cannot saturate and run
# the U8S8 kernels (VNNI where the CPU has it); unsigned 8-bit weights run the U8U8 kernels, which
# widen to 16 bits first (exact everywhere, full precision, slower on VNNI CPUs). MiniLM's long
# texts lose more to 7 bits (lowest cosine 0.941 vs 0.968 over the gate's texts on an AVX2 CPU), so
# a model the first fails is tried with the second.
WEIGHT_FORMATS = {
    "7-bit signed weights": {"weight_type": "QInt8", "reduce_range": True},
    "8-bit unsigned weights": {"weight_type": "QUInt8", "reduce_range": False},
}


def quantize_int8(fp32_path: Path, out_path: Path, exclude: list[str], weights: str) -> None:
    """Dynamic int8 quantization with ONNX Runtime: per-channel weights in one of WEIGHT_FORMATS,
    uint8 activations quantized at run time. MatMul and Gather (embeddings) are quantized, but the
    nodes in `exclude`; the graph is otherwise left as exported (ORT fuses at load time)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    fmt = WEIGHT_FORMATS[weights]
    external = any(f.name != fp32_path.name for f in fp32_path.parent.iterdir())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice at WARNING through the root logger
    try:
        quantize_dynamic(
            fp32_path,
            out_path,
            per_channel=True,
            reduce_range=bool(fmt["reduce_range"]),
            weight_type=getattr(QuantType, str(fmt["weight_type"])),
            use_external_data_format=external,
            nodes_to_exclude=exclude,
        )
    finally:
        root.setLevel(level)


@dataclass
class Quantized:
    """An int8 graph that passed the gate: its metrics, weight format, what stayed fp32 (those
    MatMul nodes), and the fp32 reference the model tier checks it against where it is served."""

    metrics: dict[str, float]
    weights: str
    kept_fp32: str
    excluded: list[str]
    reference: Int8Reference


def quantize_within_gate(
    fp32: Path,
    out: Path,
    tokenizer: Any,
    max_length: int,
    gate: tuple[str, ...],
    output: str,
    texts: list[str],
    thresholds: dict[str, float],
) -> Quantized:
    """Quantize into `out`, fastest first (each weight format, then `remedies`: the most
    sensitive products left in fp32), until the quality gate passes. Past every candidate, the
    first one's failure, naming what else was tried."""
    reference = int8_reference(fp32, tokenizer, max_length, gate, output, texts, thresholds)
    candidates = remedies(fp32)
    first: ExportError | None = None
    for weights in WEIGHT_FORMATS:
        for kept_fp32, exclude in candidates:
            quantize_int8(fp32, out, exclude, weights)
            try:
                metrics = check_quantized(out, reference)
            except ExportError as exc:
                first = first or exc
                continue
            metrics["int8_excluded_nodes"] = float(len(exclude))
            return Quantized(metrics, weights, kept_fp32, exclude, reference)
    kept = ", ".join(what for what, _ in candidates[1:]) or "nothing else to try"
    formats = list(WEIGHT_FORMATS)
    raise ExportError(
        f"{first} (with {formats[0]}; also tried leaving in fp32: {kept}; and each with {', '.join(formats[1:])})"
    )


def int8_reference(
    fp32_path: Path,
    tokenizer: Any,
    max_length: int,
    gate: tuple[str, ...],
    output: str,
    texts: list[str],
    thresholds: dict[str, float],
    batch_size: int = 16,
) -> Int8Reference:
    """The fp32 graph's summaries of `texts`, batched as the model tier batches them (`batches`):
    what the int8 graph is checked against, here and where it is served."""
    import onnxruntime as ort

    rows = [list(map(int, tokenizer(t, truncation=True, max_length=max_length)["input_ids"])) for t in texts]
    reference = Int8Reference(
        output=output,
        gate=list(gate),
        thresholds={m: thresholds[m] for m in gate},
        pad_id=int(tokenizer.pad_token_id or 0),
        batches=batches(rows, batch_size),
        reference={},
        export_cpu=list(cpu.cpu_features()),
    )
    session = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    summaries = [summarize(session.run([output], feeds)[0], mask, gate) for feeds, mask in reference.feeds(names)]
    reference.reference = pack(np.concatenate(summaries))
    return reference


def batches(rows: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Rows of similar lengths together, at most `batch_size` and at most the model tier's default
    padding fraction of each batch's tokens: dynamic int8 scales each batch's activations by its
    largest, padding included, so a short text padded to 512 beside a long one rounds differently
    than it ever would in the tier (MiniLM: the lowest cosine 0.945 so, 0.966 batched as served)."""
    out: list[list[list[int]]] = []
    for row in sorted(rows, key=len):
        batch = out[-1] if out else None
        if batch and len(batch) < batch_size:
            tokens = sum(map(len, batch)) + len(row)
            if 1 - tokens / ((len(batch) + 1) * len(row)) <= DEFAULT_MAX_PAD_FRACTION:
                batch.append(row)
                continue
        out.append([row])
    return out


def check_quantized(int8_path: Path, reference: Int8Reference) -> dict[str, float]:
    """Run the int8 graph on the reference's inputs; fail when one of the gated metrics is past its
    threshold. Returns the metrics (names start with `int8_`), also kept in the reference."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feeds = reference.feeds(names)
    outputs = [session.run([reference.output], f)[0] for f, _ in feeds]
    metrics, failures = reference.check(outputs, [mask for _, mask in feeds])
    if failures:
        texts = sum(len(b) for b in reference.batches)
        raise ExportError(
            f"int8 quality gate failed: {'; '.join(failures)} between the int8 and fp32 ONNX graphs over {texts} "
            f"sample texts; refusing to export. Export without quantization, or accept the loss with a lower "
            f"quality threshold"
        )
    reference.export_metrics = metrics
    return {**metrics, **{f"int8_{m}_threshold": t for m, t in reference.thresholds.items()}}
