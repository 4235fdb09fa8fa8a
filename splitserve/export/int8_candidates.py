"""The int8 graphs `splitserve export --quantize int8` tries (`quantize.quantize_within_gate` runs
them against the gate): static QDQ calibrated on held-apart texts, ONNX Runtime's dynamic
quantization in each weight format, with the most sensitive products left in fp32 as remedies,
and last, slower but finer, blockwise 8-bit products (MatMulNBits)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


# Static QDQ's format: uint8 activations with ranges calibrated once at export (no scale computed
# per batch at run time), per-channel signed weights of 7 bits (`reduce_range`: the U8S8 kernels
# cannot saturate on AVX2, as above). Only the products with a weight are quantized, their
# outputs left fp32, so the attention products (softmax output x values), the softmax, LayerNorm
# and GELU stay fp32.
STATIC_FORMAT = "static QDQ, uint8 activations, 7-bit signed weights"


# Blockwise (ONNX Runtime's MatMulNBits, 8 bits, accuracy level 4): each weight product's weights
# in blocks along the inner dimension, each with its own scale, and the activations quantized to
# int8 per block of each row at run time (int8 products, VNNI where the CPU has it). Dynamic
# quantization scales a whole batch's activations by one number, so a token's outlier channel
# coarsens every other value; per block of 32 it coarsens 31. all-MiniLM-L6-v2 keeps 0.97-0.98 of
# its nearest neighbours so (dynamic: 0.89-0.92) at 1.2-1.4x fp32 (dynamic: ~2.2x):
# benchmarks/int8-candidates.md. Tried last (on small batches blocks of 128 can outrun dynamic's
# 8-bit unsigned weights, but under load neither is faster than fp32): kept only where nothing
# that keeps a per-batch or per-tensor scale passes. Its kernels
# differ by CPU like the others', and the model tier repeats the gate on the CPU it serves on.
BLOCKWISE_FORMATS = {
    "8-bit weights in blocks of 128": {"block_size": 128, "is_symmetric": True},
    "8-bit weights in blocks of 32": {"block_size": 32, "is_symmetric": False},
}


@dataclass(frozen=True)
class Candidate:
    """One int8 quantization export may keep: static QDQ, dynamic or blockwise, its weight format,
    and the weight products left in fp32 (`exclude`, with what they are)."""

    method: str  # "static", "dynamic" or "blockwise"
    weights: str  # STATIC_FORMAT, a WEIGHT_FORMATS key or a BLOCKWISE_FORMATS key
    kept_fp32: str
    exclude: tuple[str, ...]

    @property
    def format(self) -> str:
        """What the bundle records as its `quantization_weights`."""
        return STATIC_FORMAT if self.method == "static" else f"{self.method}, {self.weights}"

    @property
    def name(self) -> str:
        return self.format + (f"; {self.kept_fp32} in fp32" if self.kept_fp32 != "nothing" else "")


def candidates(fp32_path: Path) -> list[Candidate]:
    """The int8 candidates, about fastest first as benchmarks/int8-candidates.md measured them: static
    QDQ (the head in fp32) and dynamic with 7-bit weights (both tried, the faster kept: see
    `quantize_within_gate`), then dynamic in each weight format with each of `remedies`, then
    blockwise in each of BLOCKWISE_FORMATS."""
    static_exclude = [n for n in weight_products(fp32_path) if _HEAD.search(n)]
    kept = "the head" if static_exclude else "nothing"
    out = [Candidate("static", STATIC_FORMAT, kept, tuple(static_exclude))]
    found = remedies(fp32_path)
    out += [Candidate("dynamic", w, what, tuple(nodes)) for w in WEIGHT_FORMATS for what, nodes in found]
    out += [Candidate("blockwise", w, "nothing", ()) for w in BLOCKWISE_FORMATS]
    return out


def quantize_candidate(
    candidate: Candidate, fp32_path: Path, out_path: Path, calibrate: Callable[[], list[dict[str, np.ndarray]]]
) -> None:
    """Write `candidate`'s graph to `out_path`; `calibrate()`: static quantization's inputs
    (called only for a static candidate)."""
    exclude = list(candidate.exclude)
    if candidate.method == "static":
        quantize_static_int8(fp32_path, out_path, exclude, calibrate())
    elif candidate.method == "blockwise":
        quantize_blockwise_int8(fp32_path, out_path, exclude, candidate.weights)
    else:
        quantize_int8(fp32_path, out_path, exclude, candidate.weights)


def weight_products(fp32_path: Path) -> list[str]:
    """The MatMul nodes whose second input is a weight (an initializer): the projections, the
    feed-forward products and the head; not the attention products of two activations."""
    import onnx

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in weights]


def quantize_int8(fp32_path: Path, out_path: Path, exclude: list[str], weights: str) -> None:
    """Dynamic int8 quantization with ONNX Runtime: per-channel weights in one of WEIGHT_FORMATS,
    uint8 activations quantized at run time. MatMul and Gather (embeddings) are quantized, but the
    nodes in `exclude`; the graph is otherwise left as exported (ORT fuses at load time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fmt = WEIGHT_FORMATS[weights]
    with _quiet_quantizer():
        quantize_dynamic(
            fp32_path,
            out_path,
            per_channel=True,
            reduce_range=bool(fmt["reduce_range"]),
            weight_type=getattr(QuantType, str(fmt["weight_type"])),
            use_external_data_format=_external(fp32_path),
            nodes_to_exclude=exclude,
        )


def quantize_static_int8(
    fp32_path: Path, out_path: Path, exclude: list[str], calibration: list[dict[str, np.ndarray]]
) -> None:
    """Static int8 (STATIC_FORMAT) with ONNX Runtime: activation ranges calibrated (min/max) on
    `calibration` (graph inputs, one dict per batch), the weight products but `exclude` quantized
    with Q/DQ pairs that ORT fuses into int8 kernels at load time."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._feeds = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with _quiet_quantizer():
        quantize_static(
            fp32_path,
            out_path,
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=[n for n in weight_products(fp32_path) if n not in exclude],
            use_external_data_format=_external(fp32_path),
            # products' outputs stay fp32 (ORT runs MatMulIntegerToFloat): quantizing them too
            # (QLinearMatMul) cut MiniLM's top-1 agreement from 0.88 to 0.71
            extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]},
        )


def quantize_blockwise_int8(fp32_path: Path, out_path: Path, exclude: list[str], weights: str) -> None:
    """Blockwise int8 (BLOCKWISE_FORMATS) with ONNX Runtime's MatMulNBits: the weight products but
    `exclude` quantized, 8 bits, int8 products (accuracy level 4)."""
    import onnx

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits  # configures the root logger on import

    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger(nbits.__name__).setLevel(logging.WARNING)  # an INFO line per node otherwise
    config = nbits.DefaultWeightOnlyQuantConfig(bits=8, accuracy_level=4, **BLOCKWISE_FORMATS[weights])
    with _quiet_quantizer():
        quantizer = nbits.MatMulNBitsQuantizer(onnx.load(str(fp32_path)), nodes_to_exclude=exclude, algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out_path), _external(fp32_path))


def _external(fp32_path: Path) -> bool:
    """Whether the graph keeps its weights in files beside it (then so does the quantized one)."""
    return any(f.name != fp32_path.name for f in fp32_path.parent.iterdir())


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs advice at WARNING through the root logger: silenced while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
