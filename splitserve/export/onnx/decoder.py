"""Decoder-only LMs with a KV cache as one ONNX graph, `model.onnx`, that serves every step:

| input | shape (int64 / float32) |
|---|---|
| `input_ids` | [batch, sequence]: the prompt (left-padded), then one token per step |
| `attention_mask` | [batch, past_sequence + sequence]: past and new tokens, 0 at padding |
| `position_ids` | [batch, sequence]: where the model takes them (`generate`'s: real tokens counted) |
| `past_key_values.<i>.key` / `.value` | [batch, kv_heads, past_sequence, head_dim]: empty at the first step |

| output | shape |
|---|---|
| `logits` | [batch, 1, vocab]: the last position's (`logits_to_keep=1`); [batch, sequence, vocab] for a model without that option |
| `present.<i>.key` / `.value` | [batch, kv_heads, past_sequence + sequence, head_dim] |

The model runs as transformers' own forward with a `DynamicCache` filled from the flat past
(`use_cache=True`), so attention, masks (causal, padding, sliding window) and rotary positions
are transformers' code, traced. Batch, sequence and past length are dynamic. Only the last
position's logits leave the graph: the prompt's step skips the LM head on every other position (a
third of GPT-2's prefill work) and never holds [batch, prompt, vocab] floats (8 prompts of 512
tokens: 820 MB at GPT-2's vocabulary). Models whose cache
is not one key/value pair per layer (recurrent state, shared layers) are refused in one line.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from splitserve.core.errors import ExportError
from splitserve.export.onnx.graph import export_module, what_model

FILE = "model.onnx"


def cache_kwarg(module: Any) -> str:
    """The name under which a transformers forward takes its cache (`cache` since 5.x, with
    `past_key_values` deprecated; older or remote code: `past_key_values`)."""
    accepted = inspect.signature(module.forward).parameters
    return "cache" if "cache" in accepted else "past_key_values"


def cache_of(output: Any) -> Any:
    """The cache a transformers forward returned (`cache`, or `past_key_values` before 5.x); None
    if it returned none."""
    cache = output.get("cache")
    return cache if cache is not None else output.get("past_key_values")


def key_values(cache: Any, what: str) -> list[tuple[Any, Any]]:
    """(key, value) per layer of a transformers cache of plain key/value layers; ExportError
    for any other kind of cache."""
    from transformers.cache_utils import DynamicLayer

    if cache is None:
        raise ExportError(f"cannot export {what}: it returns no key/value cache")
    layers = getattr(cache, "layers", None)
    if layers is None and isinstance(cache, (tuple, list)):  # a legacy tuple of (key, value) pairs
        return [(k, v) for k, v, *_ in cache]
    if not layers or any(not isinstance(layer, DynamicLayer) for layer in layers):
        kinds = sorted({type(layer).__name__ for layer in layers or []}) or [type(cache).__name__]
        raise ExportError(f"cannot export {what}: its cache holds {kinds}, not one key/value pair per layer")
    return [(layer.keys, layer.values) for layer in layers]


def past_names(layers: int, infix: str = "") -> list[str]:
    """`past_key_values.<i>[.<infix>].key/value`, layer by layer."""
    return [f"past_key_values.{i}{infix}.{kv}" for i in range(layers) for kv in ("key", "value")]


def present_names(layers: int, infix: str = "") -> list[str]:
    return [name.replace("past_key_values.", "present.", 1) for name in past_names(layers, infix)]


def _with_past(model: Any, inputs: list[str], layers: int) -> Any:
    """The module traced: forward(*inputs, *flat past) -> (logits, *flat presents)."""
    import torch
    from transformers import DynamicCache

    kwarg = cache_kwarg(model)
    what = what_model(model, "decoder")
    last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}

    class DecoderWithPast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            named, past = dict(zip(inputs, args[: len(inputs)], strict=True)), args[len(inputs) :]
            cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(layers)])
            out = self.model(**named, **{kwarg: cache}, **last, use_cache=True, return_dict=True)
            flat = [t for pair in key_values(cache_of(out), what) for t in pair]
            return (out["logits"], *flat)

    return DecoderWithPast().eval()


def cache_shapes(model: Any) -> list[tuple[int, int]]:
    """(kv heads, head dim) of each layer's cache, read off one PyTorch step (any per-layer
    difference of the config, grouped-query attention included, is what the model does)."""
    import torch

    with torch.no_grad():
        ids = torch.tensor([[1, 2]])
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, return_dict=True)
    return [(int(k.shape[1]), int(k.shape[3])) for k, _ in key_values(cache_of(out), what_model(model, "decoder"))]


def export_decoder(model: Any, onnx_dir: Path) -> str:
    """Export a decoder-only LM with its KV cache to `onnx_dir/model.onnx` (layout: the module's
    docstring); returns the file name."""
    import torch

    shapes = cache_shapes(model)
    layers = len(shapes)
    accepted = inspect.signature(model.forward).parameters
    inputs = ["input_ids", "attention_mask"] + (["position_ids"] if "position_ids" in accepted else [])
    batch, length, past_len = 2, 3, 4  # distinct, and none 0 or 1 (torch.export would specialize on those)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    mask = torch.ones(batch, past_len + length, dtype=torch.long)
    mask[1, :2] = 0  # a left-padded row: the mask is traced as data
    values = {
        "input_ids": torch.randint(0, vocab, (batch, length)),
        "attention_mask": mask,
        "position_ids": (mask.cumsum(1) - 1).clamp(min=0)[:, past_len:],
    }
    past = [torch.randn(batch, heads, past_len, dim) for heads, dim in shapes for _ in range(2)]
    auto = torch.export.Dim.AUTO
    dynamic = tuple({0: auto, 1: auto} for _ in inputs) + tuple({0: auto, 2: auto} for _ in past)
    export_module(
        _with_past(model, inputs, layers),
        (*(values[n] for n in inputs), *past),
        onnx_dir / FILE,
        inputs + past_names(layers),
        ["logits", *present_names(layers)],
        (dynamic,),
        what_model(model, "decoder"),
    )
    return FILE
