"""PyTorch backend: runs the source pipeline's model (for comparison with ONNX)."""

from __future__ import annotations

import numpy as np

from splitserve.bundle import ServingConfig


class TorchBackend:
    name = "torch"
    platform = "pytorch_libtorch"

    def __init__(self, config: ServingConfig, device: str = "cpu", intra_op_threads: int = 0):
        import mlflow.transformers
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA GPU")
        if intra_op_threads > 0:
            torch.set_num_threads(intra_op_threads)
        components = mlflow.transformers.load_model(config.source_model_uri, return_type="components")
        self.torch = torch
        self.device = torch.device(device)
        self.model = components["model"].eval().to(self.device)
        self.config = config

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()})
        return {name: out[name].float().cpu().numpy() for name in self.config.model_outputs}

    def output_shapes(self) -> dict[str, list[int]]:
        hidden = getattr(self.model.config, "hidden_size", -1)
        if self.config.task == "feature-extraction":
            return {name: [-1, -1, hidden] for name in self.config.model_outputs}
        if self.config.task in ("text-classification", "zero-shot-classification"):
            return {name: [-1, len(self.config.id2label or {}) or -1] for name in self.config.model_outputs}
        if self.config.task == "question-answering":  # start/end logits: [rows, tokens]
            return {name: [-1, -1] for name in self.config.model_outputs}
        return {name: [-1, -1, len(self.config.id2label or {}) or -1] for name in self.config.model_outputs}
