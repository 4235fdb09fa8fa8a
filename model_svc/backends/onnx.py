"""ONNX Runtime backend: runs the bundle's exported graph. Never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splitserve.bundle import ServingConfig


class OnnxBackend:
    name = "onnx"
    platform = "onnxruntime_onnx"

    def __init__(
        self, path: Path, config: ServingConfig, device: str = "cpu", intra_op_threads: int = 0, spin_wait: bool = False
    ):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Spinning idle threads steal the cores the other tiers (and other replicas) run on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(
                    "device 'cuda' was asked for, but this onnxruntime has no CUDA execution provider "
                    f"(available: {ort.get_available_providers()}); install onnxruntime-gpu on a GPU machine"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.config = config
        graph_inputs = {i.name for i in self.session.get_inputs()}
        if graph_inputs != set(config.model_inputs):
            raise RuntimeError(f"{path}: graph inputs {sorted(graph_inputs)} != serving.json {config.model_inputs}")

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.config.model_outputs, inputs)
        return dict(zip(self.config.model_outputs, outputs, strict=True))

    def output_shapes(self) -> dict[str, list[int]]:
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        return {name: [d if isinstance(d, int) else -1 for d in shapes[name]] for name in self.config.model_outputs}
