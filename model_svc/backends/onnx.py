"""ONNX Runtime backend: runs the bundle's exported graph. Never imports torch.

text-generation bundles hold a decoder with past key values: `generate` runs the decoding loop
(`model_svc.generation`) on it; `infer` is for every other task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_svc import generation
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
        expected = config.generation["graph_inputs"] if config.generation else config.model_inputs
        if graph_inputs != set(expected):
            raise RuntimeError(f"{path}: graph inputs {sorted(graph_inputs)} != serving.json {sorted(expected)}")
        self.decoder = OnnxDecoder(self.session, config.generation) if config.generation else None

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.config.model_outputs, inputs)
        return dict(zip(self.config.model_outputs, outputs, strict=True))

    def generate(self, inputs: dict[str, np.ndarray], params: generation.GenerationParams) -> dict[str, np.ndarray]:
        assert self.decoder is not None and self.config.generation is not None
        eos = self.config.generation["eos_token_ids"]
        return generation.generate(
            self.decoder, inputs["input_ids"], inputs["attention_mask"], params, eos, self.config.max_length
        )

    def output_shapes(self) -> dict[str, list[int]]:
        if self.config.generation:
            return {generation.OUTPUT: [-1, -1]}
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        return {name: [d if isinstance(d, int) else -1 for d in shapes[name]] for name in self.config.model_outputs}


class OnnxDecoder:
    """One forward pass of the exported decoder: `past_key_values.<i>.key/value` in,
    `present.<i>.key/value` out (the first pass feeds empty ones)."""

    def __init__(self, session: Any, info: dict[str, Any]):
        self.session = session
        names = info["graph_inputs"]
        self.past_names = [n for n in names if n.startswith("past_key_values.")]
        self.present_names = [n.replace("past_key_values.", "present.", 1) for n in self.past_names]
        self.with_positions = "position_ids" in names
        self.empty = np.zeros((1, info["num_kv_heads"], 0, info["head_dim"]), dtype=np.float32)
        self.outputs = ["logits", *self.present_names]

    def forward(self, input_ids: np.ndarray, position_ids: np.ndarray, past: Any) -> tuple[np.ndarray, Any]:
        total = int(position_ids[0, -1]) + 1
        feeds = {"input_ids": input_ids, "attention_mask": np.ones((1, total), dtype=np.int64)}
        if self.with_positions:
            feeds["position_ids"] = position_ids
        feeds.update(past if past is not None else dict.fromkeys(self.past_names, self.empty))
        logits, *presents = self.session.run(self.outputs, feeds)
        return logits[0, -1], dict(zip(self.past_names, presents, strict=True))
