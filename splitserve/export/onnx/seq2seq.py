"""Encoder-decoders with a KV cache (T5, BART, Marian, Whisper) as two ONNX graphs.

`encoder_model.onnx` runs once per prompt; it returns the encoder's states and, for every decoder
layer, the cross-attention keys and values (the projections of those states, which never change
while the decoder runs):

| input | shape |
|---|---|
| `input_ids`, `attention_mask` (text) | int64 [batch, encoder_sequence] |
| `input_features` (Whisper) | float32 [batch, mel bins, frames] |

| output | shape |
|---|---|
| `last_hidden_state` | [batch, encoder_sequence, d_model] |
| `present.<i>.encoder.key` / `.value` | [batch, heads, encoder_sequence, head_dim] |

`decoder_model.onnx` runs every step; no branch input: the first step is the same graph with an
empty self-attention past:

| input | shape |
|---|---|
| `input_ids` | int64 [batch, sequence]: the decoder's prompt, then one token per step |
| `encoder_attention_mask` (not Whisper) | int64 [batch, encoder_sequence] |
| `past_key_values.<i>.decoder.key` / `.value` | [batch, heads, past_sequence, head_dim], empty at first |
| `past_key_values.<i>.encoder.key` / `.value` | the encoder graph's `present.<i>.encoder.*` |

| output | shape |
|---|---|
| `logits` | [batch, sequence, vocab] |
| `present.<i>.decoder.key` / `.value` | [batch, heads, past_sequence + sequence, head_dim] |

Both are transformers' own forward, traced with an `EncoderDecoderCache`: the encoder graph runs
the model on a dummy decoder token and keeps only what the cross-attention cached (the rest of
that step is dead code the exporter drops); the decoder graph hands the model the cross-attention
cache marked as computed (`is_updated`), so it never projects the encoder's states again.
Optimum's layout (one merged decoder that recomputes the cross-attention keys and values on a
`use_cache_branch`) took the encoder's states at every step; this one takes their projections.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from splitserve.core.errors import ExportError
from splitserve.export.onnx.decoder import cache_kwarg, cache_of, key_values, past_names, present_names
from splitserve.export.onnx.graph import export_module, what_model

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"


def encoder_inputs(model: Any) -> list[str]:
    """The encoder graph's inputs: Whisper's `input_features`, else token ids and their mask."""
    accepted = inspect.signature(model.forward).parameters
    return ["input_features"] if "input_features" in accepted else ["input_ids", "attention_mask"]


def _caches(out: Any, what: str) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]:
    """(self-attention, cross-attention) key/value pairs per layer of an EncoderDecoderCache."""
    cache = cache_of(out)
    if not hasattr(cache, "cross_attention_cache"):
        key_values(cache, what)  # no cache at all: says so
        raise ExportError(f"cannot export {what}: its cache is a {type(cache).__name__}, not an EncoderDecoderCache")
    return key_values(cache.self_attention_cache, what), key_values(cache.cross_attention_cache, what)


def _encoder_module(model: Any, inputs: list[str]) -> Any:
    """forward(*inputs) -> (last_hidden_state, *cross keys/values per layer)."""
    import torch
    from transformers import DynamicCache, EncoderDecoderCache

    kwarg, what = cache_kwarg(model), what_model(model, "encoder")

    class EncoderWithCross(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            start = torch.zeros(args[0].shape[0], 1, dtype=torch.long, device=args[0].device)
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            named = dict(zip(inputs, args, strict=True))
            out = self.model(**named, decoder_input_ids=start, **{kwarg: cache}, use_cache=True, return_dict=True)
            _, cross = _caches(out, what)
            return (out["encoder_last_hidden_state"], *(t for pair in cross for t in pair))

    return EncoderWithCross().eval()


def _decoder_module(model: Any, masked: bool, layers: int, width: int) -> Any:
    """forward(input_ids, [encoder_attention_mask], *self past, *cross) -> (logits, *self presents)."""
    import torch
    from transformers import DynamicCache, EncoderDecoderCache

    kwarg, what = cache_kwarg(model), what_model(model, "decoder")
    fixed = 2 if masked else 1

    class DecoderWithCache(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            ids, past, cross = args[0], args[fixed : fixed + 2 * layers], args[fixed + 2 * layers :]
            pairs = [(past[2 * i], past[2 * i + 1]) for i in range(layers)]
            cross_pairs = [(cross[2 * i], cross[2 * i + 1]) for i in range(layers)]
            cache = EncoderDecoderCache(DynamicCache(pairs), DynamicCache(cross_pairs))
            cache.is_updated = dict.fromkeys(range(layers), True)  # cross-attention: use the cache as given
            # The encoder's states are only read for their shape (the cross-attention's keys are given).
            states = cross[0].new_zeros(cross[0].shape[0], cross[0].shape[2], width)
            mask = {"attention_mask": args[1]} if masked else {}
            out = self.model(
                encoder_outputs=(states,),
                decoder_input_ids=ids,
                **mask,
                **{kwarg: cache},
                use_cache=True,
                return_dict=True,
            )
            presents, _ = _caches(out, what)
            return (out["logits"], *(t for pair in presents for t in pair))

    return DecoderWithCache().eval()


def _sample_inputs(model: Any, inputs: list[str], batch: int, length: int) -> tuple[Any, ...]:
    """Encoder inputs for tracing: a right-padded row beside a full one; Whisper's features."""
    import torch

    if inputs == ["input_features"]:
        config = model.config
        frames = 2 * int(config.max_source_positions)  # Whisper's encoder takes exactly this many frames
        return (torch.randn(batch, int(config.num_mel_bins), frames),)
    vocab = int(model.config.vocab_size)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, -2:] = 0
    return torch.randint(0, vocab, (batch, length)), mask


def export_seq2seq(model: Any, onnx_dir: Path) -> str:
    """Export an encoder-decoder to `onnx_dir` (`encoder_model.onnx`, `decoder_model.onnx`;
    layout: the module's docstring); returns the decoder's file name."""
    import torch

    inputs = encoder_inputs(model)
    batch, enc_len, length, past_len = 2, 5, 3, 4  # distinct, none 0 or 1 (torch.export specializes those)
    encoder_args = _sample_inputs(model, inputs, batch, enc_len)
    with torch.no_grad():
        start = torch.zeros(batch, 1, dtype=torch.long)
        named = dict(zip(inputs, encoder_args, strict=True))
        out = model(**named, decoder_input_ids=start, use_cache=True, return_dict=True)
    _, cross = _caches(out, what_model(model, "decoder"))
    layers, width = len(cross), int(out["encoder_last_hidden_state"].shape[-1])
    auto = torch.export.Dim.AUTO
    batch_only = {0: auto} if inputs == ["input_features"] else {0: auto, 1: auto}
    export_module(
        _encoder_module(model, inputs),
        encoder_args,
        onnx_dir / ENCODER_FILE,
        inputs,
        ["last_hidden_state", *present_names(layers, ".encoder")],
        (tuple(batch_only for _ in inputs),),
        what_model(model, "encoder"),
    )

    masked = inputs != ["input_features"]
    vocab = int(model.config.vocab_size)
    enc_states = cross[0][0].shape[2]
    past = [torch.randn(batch, k.shape[1], past_len, k.shape[3]) for k, _ in cross for _ in range(2)]
    cross_kv = [torch.randn(batch, k.shape[1], enc_states, k.shape[3]) for k, _ in cross for _ in range(2)]
    decoder_args: tuple[Any, ...] = (torch.randint(0, vocab, (batch, length)),)
    names = ["input_ids"]
    if masked:
        decoder_args += (encoder_args[1],)
        names.append("encoder_attention_mask")
    dynamic = (
        ({0: auto, 1: auto},) * len(names)
        + ({0: auto, 2: auto},) * len(past)
        + (({0: auto, 2: auto} if masked else {0: auto}),) * len(cross_kv)
    )
    export_module(
        _decoder_module(model, masked, layers, width),
        (*decoder_args, *past, *cross_kv),
        onnx_dir / DECODER_FILE,
        names + past_names(layers, ".decoder") + past_names(layers, ".encoder"),
        ["logits", *present_names(layers, ".decoder")],
        (dynamic,),
        what_model(model, "decoder"),
    )
    return DECODER_FILE
