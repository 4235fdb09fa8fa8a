"""Encoder graphs: one forward pass, no cache. Text encoders (every encoder task: embeddings,
classification, NER, QA, fill-mask, zero-shot) take `input_ids`, `attention_mask` and, where the
model has more than one token type, `token_type_ids` (int64 [batch, sequence]); audio encoders
(Wav2Vec2-style classification and CTC) take `input_values` (float32 [batch, samples]). Batch and
length are dynamic; the outputs are the task's (`last_hidden_state`, `logits`, `start_logits` and
`end_logits`)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from splitserve.export.onnx.graph import export_module, what_model

FILE = "model.onnx"


def text_inputs(model: Any) -> list[str]:
    """The inputs the graph takes: token types only where the model has several (BERT; not
    RoBERTa, whose single type is always 0, nor DistilBERT, which takes none)."""
    accepted = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in accepted and (getattr(model.config, "type_vocab_size", 0) or 0) > 1:
        names.append("token_type_ids")
    return names


def _named(model: Any, inputs: list[str], outputs: list[str]) -> Any:
    """A module whose forward(*inputs) returns the named outputs as a tuple (what is traced)."""
    import torch

    class Named(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            result = self.model(**dict(zip(inputs, args, strict=True)), return_dict=True)
            return tuple(result[name] for name in outputs)

    return Named().eval()


def export_encoder(model: Any, onnx_dir: Path, outputs: list[str] | tuple[str, ...]) -> str:
    """Export a text or audio encoder's `outputs` to `onnx_dir/model.onnx`; returns the file name."""
    import torch

    audio = "input_values" in inspect.signature(model.forward).parameters
    batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
    if audio:
        names = ["input_values"]
        args: tuple[Any, ...] = (torch.randn(2, 16000),)
        batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("samples", min=400)
    else:
        names = text_inputs(model)
        vocab = int(getattr(model.config, "vocab_size", 100) or 100)
        ids = torch.randint(min(5, vocab - 1), vocab, (2, 11))
        mask = torch.ones(2, 11, dtype=torch.long)
        mask[1, 7:] = 0  # a padded row: the mask is traced as data, not as a constant
        args = (ids, mask, torch.zeros(2, 11, dtype=torch.long))[: len(names)]
    dynamic = tuple({0: batch, 1: length} for _ in names)
    module = _named(model, names, list(outputs))
    export_module(module, args, onnx_dir / FILE, names, list(outputs), (dynamic,), what_model(model, "encoder"))
    return FILE
