"""How far a figure is from the machine's limit: the GEMM roofs of this machine (fp32, int8,
bf16), measured in the same run as the targets, and each target's GFLOP per CPU-second.

A roof is a large matrix product's FLOPs per CPU-second of the process (all its threads), so it
compares with a target's FLOPs per record over its CPU-seconds per record (all its processes).
A model's FLOPs per token are counted from its config: per layer, 2 x the weight matrices
(q, k, v, o, and the two of the feed-forward block) and the attention's two products.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

M, K, N = 1024, 384, 1536  # MiniLM's feed-forward product at 1024 tokens


def _per_cpu_second(flops: float, run: Callable[[], Any], seconds: float = 1.5) -> float:
    run()  # warm-up (threads, caches)
    start_cpu, start, done = time.process_time(), time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        run()
        done += 1
    return flops * done / max(time.process_time() - start_cpu, 1e-9) / 1e9


def roofs() -> dict[str, float]:
    """GFLOP per CPU-second of an M x K x N product: fp32 the best of numpy (OpenBLAS), ONNX
    Runtime (MLAS) and torch (MKL/oneDNN); ONNX Runtime int8 (MatMulInteger u8s8, the kernel
    dynamic quantization runs); torch bf16 (oneDNN)."""
    rng = np.random.default_rng(0)
    flops = 2.0 * M * K * N
    a, b = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
    fp32 = [_per_cpu_second(flops, lambda: a @ b)]  # the fp32 roof: the best of numpy, ORT and torch
    out: dict[str, float] = {}
    try:
        out["int8"] = _int8_roof(flops, rng)
        fp32.append(_ort_roof(flops, a, b))
    except Exception:  # noqa: BLE001 - a roof this machine cannot measure is left out
        pass
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        fp32.append(_per_cpu_second(flops, lambda: ta @ tb))
        ta, tb = ta.bfloat16(), tb.bfloat16()
        out["bf16"] = _per_cpu_second(flops, lambda: ta @ tb)
    except Exception:  # noqa: BLE001
        pass
    out["fp32"] = max(fp32)
    return {k: round(v, 1) for k, v in out.items()}


def _ort_roof(flops: float, a: np.ndarray, b: np.ndarray) -> float:
    """ONNX Runtime's fp32 MatMul (MLAS) on the same product."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "fp32",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])],
        initializer=[numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return _per_cpu_second(flops, lambda: session.run(None, {"a": a}))


def _int8_roof(flops: float, rng: np.random.Generator) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])],
        "int8",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [M, K]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [K, N]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [M, N])],
        initializer=[
            helper.make_tensor("za", TensorProto.UINT8, [], [128]),
            helper.make_tensor("zb", TensorProto.INT8, [], [0]),
        ],
    )
    # An IR version ONNX Runtime reads (onnx's own default can be newer than the runtime's).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"a": rng.integers(0, 255, (M, K), dtype=np.uint8), "b": rng.integers(-127, 127, (K, N), dtype=np.int8)}
    onnx.checker.check_model(model)
    return _per_cpu_second(flops, lambda: session.run(None, feeds))


def flops_per_token(config: Any, tokens: float) -> float:
    """A BERT-style encoder's FLOPs per token at a mean length of `tokens`."""
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return layers * (2 * (4 * h * h + 2 * h * f) + 2 * 2 * tokens * h)


def precision_of(target: str) -> str:
    return "int8" if "int8" in target else "bf16" if "bf16" in target else "fp32"
