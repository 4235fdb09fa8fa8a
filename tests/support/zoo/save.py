"""Saving a tiny model as `transformers.pipeline` loads it, with seeded weights."""

from __future__ import annotations

from pathlib import Path


def save_folder(model, tok, out: Path) -> Path:
    """A model and its tokenizer in one folder, as `transformers.pipeline` loads them."""
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def seeded(cls, config, seed: int):
    """`cls(config)` with weights drawn after `torch.manual_seed(seed)`, in eval mode."""
    import torch

    torch.manual_seed(seed)
    return cls(config).eval()
