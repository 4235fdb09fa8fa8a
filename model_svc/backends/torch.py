"""PyTorch backend: runs the source pipeline's model (for comparison with ONNX).

text-generation: the same decoding loop as the ONNX backend (`model_svc.generation`), one
forward pass of the model per token with its own past key values cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_svc import generation
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

    def generate(self, inputs: dict[str, np.ndarray], params: generation.GenerationParams) -> dict[str, np.ndarray]:
        assert self.config.generation is not None
        eos = self.config.generation["eos_token_ids"]
        return generation.generate(
            self, inputs["input_ids"], inputs["attention_mask"], params, eos, self.config.max_length
        )

    def forward(self, input_ids: np.ndarray, position_ids: np.ndarray, past: Any) -> tuple[np.ndarray, Any]:
        """`generation.Decoder`: one pass of the model with its past key values cache."""
        torch = self.torch
        total = int(position_ids[0, -1]) + 1
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(input_ids).to(self.device),
                attention_mask=torch.ones((1, total), dtype=torch.long, device=self.device),
                position_ids=torch.from_numpy(position_ids).to(self.device),
                past_key_values=past,
                use_cache=True,
            )
        return out.logits[0, -1].float().cpu().numpy(), out.past_key_values

    def output_shapes(self) -> dict[str, list[int]]:
        if self.config.generation:
            return {generation.OUTPUT: [-1, -1]}
        hidden = getattr(self.model.config, "hidden_size", -1)
        if self.config.task == "feature-extraction":
            return {name: [-1, -1, hidden] for name in self.config.model_outputs}
        if self.config.task in ("text-classification", "zero-shot-classification"):
            return {name: [-1, len(self.config.id2label or {}) or -1] for name in self.config.model_outputs}
        if self.config.task == "question-answering":  # start/end logits: [rows, tokens]
            return {name: [-1, -1] for name in self.config.model_outputs}
        return {name: [-1, -1, len(self.config.id2label or {}) or -1] for name in self.config.model_outputs}
