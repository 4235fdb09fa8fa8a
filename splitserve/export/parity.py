"""The exported graphs checked against PyTorch on the sample texts: an encoder's outputs, a
decoder-only LM's logits (prefill and one step with past), an encoder-decoder's encoder states and
decoder logits, and for generation the greedy tokens of a few steps, exactly. Export fails past the
tolerance; the numbers become MLflow metrics.

The tolerance is relative to each output's scale: an output passes when every value is within
`tolerance * max(1, max|reference|)` of PyTorch's. fp32 kernels round differently on different
CPUs (AVX2, AVX-512, VNNI) and the rounding grows with the values' magnitude, so an absolute or
per-element bound refuses a model on one CPU that it accepts on another (a T5 whose logits reach
291 differed by 1.4e-4 at a logit near 0 on an AVX2 CPU). Measured on an AVX2-only CPU, the
largest `max|diff| / max(1, max|reference|)` over the test models is 1.8e-5 (a Wav2Vec2 CTC head),
T5's logits 4.7e-7, MiniLM's hidden states 4.8e-7: the default 1e-4 leaves 5x to 200x of room.
Within that bound, what users see (labels, spans, tokens) can only differ where the reference
itself has two candidates within 2 * tolerance * scale of each other (a tie)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splitserve.core.errors import ExportError
from splitserve.export.samples import SAMPLE_TEXTS


def check_parity(
    model: Any,
    onnx_path: Path,
    tokenizer: Any,
    max_length: int,
    inputs: list[str],
    outputs: str | tuple[str, ...] | list[str],
    tolerance: float,
    token_outputs: tuple[str, ...] | list[str] = (),
) -> dict[str, float]:
    """Run PyTorch and ONNX Runtime on the same batch and compare every output (`token_outputs`:
    those with one value per token, compared at real tokens only); fail past `tolerance` (abs +
    rel) on any. The metrics are the worst over all outputs."""
    import onnxruntime as ort
    import torch

    names_out = [outputs] if isinstance(outputs, str) else list(outputs)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    enc = tokenizer(SAMPLE_TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    feeds = {n: enc[n].astype(np.int64) if n in enc else np.zeros_like(enc["input_ids"], dtype=np.int64) for n in names}
    with torch.inference_mode():
        torch_out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    onnx_out = dict(zip(names_out, session.run(names_out, feeds), strict=True))
    mask = enc["attention_mask"].astype(bool)
    parity = Parity(tolerance)
    for output in names_out:
        expected, actual = torch_out[output].float().numpy(), onnx_out[output]
        if output in token_outputs:  # token-level outputs: compare real tokens only
            expected, actual = expected[mask], actual[mask]
        parity.compare(expected, actual, f"ONNX output {output!r}")
    return parity.metrics()


class Parity:
    """The worst differences over every output compared; ExportError at the first one past the
    tolerance (see the module's docstring)."""

    def __init__(self, tolerance: float):
        self.tolerance = tolerance
        self.max_abs = self.max_scaled = 0.0

    def compare(self, expected: np.ndarray, actual: np.ndarray, what: str) -> None:
        diff = float(np.abs(expected - actual).max()) if expected.size else 0.0
        scale = max(1.0, float(np.abs(expected).max()) if expected.size else 0.0)
        if not diff <= self.tolerance * scale:
            raise ExportError(
                f"{what} differs from PyTorch by up to {diff:.3g} where its values reach {scale:.3g} "
                f"(tolerance {self.tolerance:g} of that scale, {self.tolerance * scale:.3g}); refusing to export"
            )
        self.max_abs, self.max_scaled = max(self.max_abs, diff), max(self.max_scaled, diff / scale)

    def metrics(self) -> dict[str, float]:
        return {
            "parity_max_abs_diff": self.max_abs,
            "parity_max_scaled_diff": self.max_scaled,
            "parity_tolerance": self.tolerance,
        }


GREEDY_STEPS = 4  # tokens each sample prompt is decoded for, greedily, by ONNX Runtime and by PyTorch
GREEDY_PROMPT_TOKENS = 64  # prompts are cut to this many tokens for the greedy check (8 rows in one batch)


def check_generation_parity(
    model: Any, onnx_path: Path, tokenizer: Any, max_length: int, texts: list[str], tolerance: float
) -> dict[str, float]:
    """The decoder graph against PyTorch: the logits of every prompt position (prefill, empty past)
    and of one more step fed the graph's own present key values, fail past `tolerance`; then the
    greedy tokens of all prompts in one left-padded batch (the model tier's `OnnxDecoder`) against
    PyTorch's `generate(do_sample=False)` on the same batch, exactly."""
    import onnxruntime as ort
    import torch

    from model_svc.backends.onnx import OnnxDecoder
    from splitserve.export.onnx.decoder import cache_kwarg, cache_of

    model = unwrapped(model)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    stepper = OnnxDecoder(session)
    outputs, kwarg = stepper.outputs, cache_kwarg(model)
    parity = Parity(tolerance)
    for text in texts:
        ids = np.asarray([tokenizer(text, truncation=True, max_length=max_length - 1)["input_ids"]], dtype=np.int64)
        n = ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), **stepper.empty_past(1)}
        if stepper.with_positions:
            feeds["position_ids"] = np.arange(n, dtype=np.int64)[None]
        first, *presents = session.run(outputs, feeds)
        token = int(first[0, -1].argmax())
        feeds = {
            "input_ids": np.asarray([[token]], dtype=np.int64),
            "attention_mask": np.ones((1, n + 1), dtype=np.int64),
            **dict(zip(stepper.past_names, presents, strict=True)),
        }
        if stepper.with_positions:
            feeds["position_ids"] = np.asarray([[n]], dtype=np.int64)
        (second,) = session.run(["logits"], feeds)
        with torch.inference_mode():
            positions = {"position_ids": torch.arange(n)[None]} if stepper.with_positions else {}
            t1 = model(input_ids=torch.from_numpy(ids), attention_mask=torch.ones(1, n, dtype=torch.long), **positions)
            t_feeds = {k: torch.from_numpy(v) for k, v in feeds.items() if not k.startswith("past_key_values.")}
            t2 = model(**t_feeds, **{kwarg: cache_of(t1)})
        kept = first.shape[1]  # the graph's logits: the last position's, or every position's
        parity.compare(t1.logits[0, -kept:].float().numpy(), first[0], "ONNX decoder logits (prompt)")
        parity.compare(t2.logits[0].float().numpy(), second[0], "ONNX decoder logits (with past)")
    limit = min(max_length - GREEDY_STEPS, GREEDY_PROMPT_TOKENS)
    prompts = [np.asarray(tokenizer(t, truncation=True, max_length=limit)["input_ids"], dtype=np.int64) for t in texts]
    ids, mask = _padded(prompts, left=True)
    expected = torch_greedy(model, {"input_ids": ids, "attention_mask": mask}, None)
    same_tokens(expected, onnx_greedy(stepper, prompts), "ONNX greedy tokens (left-padded batch)")
    return parity.metrics()


def unwrapped(model: Any) -> Any:
    """The transformers model that computes a PEFT model's outputs (its LoRA layers in place, not
    merged): what generate and the cache API are called on."""
    base = getattr(model, "get_base_model", None)
    return base() if callable(base) else model


def onnx_greedy(stepper: Any, prompts: list[np.ndarray], steps: int = GREEDY_STEPS) -> np.ndarray:
    """`steps` greedy tokens per prompt, all prompts in one batch, as the model tier steps them."""
    logits, state, _ = stepper.start_rows(prompts)
    tokens = []
    for i in range(steps):
        tokens.append(logits.argmax(-1))
        if i + 1 < steps:
            logits, state = stepper.step(tokens[-1], state)
    return np.stack(tokens, axis=1)


def torch_greedy(model: Any, inputs: dict[str, np.ndarray], decoder_prompt: np.ndarray | None) -> np.ndarray:
    """PyTorch's `generate(do_sample=False)` for GREEDY_STEPS tokens: plain argmax decoding (the
    model's own generation_config, whose forced and suppressed tokens the check is not about, is
    set aside meanwhile; no eos, so every row decodes every step)."""
    import torch
    import transformers

    saved = model.generation_config
    config = transformers.GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=GREEDY_STEPS,
        pad_token_id=0,
        decoder_start_token_id=saved.decoder_start_token_id,
    )
    kwargs = {k: torch.from_numpy(v) for k, v in inputs.items()}
    if decoder_prompt is not None:
        rows = len(next(iter(inputs.values())))
        kwargs["decoder_input_ids"] = torch.from_numpy(np.repeat(decoder_prompt[None], rows, axis=0))
    model.generation_config = config
    try:
        with torch.inference_mode():  # the base generate: Whisper's own adds its prompt and timestamps logic
            out = transformers.GenerationMixin.generate(model, **kwargs, generation_config=config)
    finally:
        model.generation_config = saved
    return out[:, -GREEDY_STEPS:].numpy()


def same_tokens(expected: np.ndarray, actual: np.ndarray, what: str) -> None:
    rows = [i for i in range(len(expected)) if list(expected[i]) != list(actual[i])]
    if rows:
        i = rows[0]
        raise ExportError(
            f"{what} differ from PyTorch's generate(do_sample=False) in {len(rows)} of {len(expected)} prompts "
            f"(prompt {i}: {actual[i].tolist()} where PyTorch gives {expected[i].tolist()}); refusing to export"
        )


def _padded(prompts: list[np.ndarray], left: bool) -> tuple[np.ndarray, np.ndarray]:
    """Token ids as one int64 batch (padded with 0, as the model tier pads) and its mask."""
    width = max(len(p) for p in prompts)
    ids, mask = np.zeros((len(prompts), width), dtype=np.int64), np.zeros((len(prompts), width), dtype=np.int64)
    for i, p in enumerate(prompts):
        where = slice(width - len(p), width) if left else slice(0, len(p))
        ids[i, where], mask[i, where] = p, 1
    return ids, mask


def decoder_two_steps(
    decoder: Any, first_ids: np.ndarray, fixed: dict[str, np.ndarray]
) -> tuple[np.ndarray, int, np.ndarray]:
    """Two steps of an encoder-decoder's decoder graph (one batch row): `first_ids` with an empty
    self-attention past, then the first step's argmax token fed the past the graph returned.
    `fixed`: the inputs both steps take (the encoder graph's cross-attention keys/values, the
    encoder's mask). Returns (the first step's logits, that token, the second's logits)."""
    shapes = {i.name: i.shape for i in decoder.get_inputs()}
    past_names = [n for n in shapes if n.startswith("past_key_values.") and n not in fixed]
    present = {n: n.replace("past_key_values.", "present.", 1) for n in past_names}
    outputs = ["logits", *present.values()]
    empty = {n: np.zeros((1, int(shapes[n][1]), 0, int(shapes[n][3])), dtype=np.float32) for n in past_names}
    feeds = {"input_ids": first_ids, **fixed, **empty}
    first = dict(zip(outputs, decoder.run(outputs, feeds), strict=True))
    token = int(first["logits"][0, -1].argmax())
    feeds.update({n: first[present[n]] for n in past_names}, input_ids=np.asarray([[token]], dtype=np.int64))
    return first["logits"], token, decoder.run(["logits"], feeds)[0]


def cross_feeds(encoder: Any, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The encoder graph's hidden states, and its cross-attention keys/values named as the decoder
    graph takes them (`present.<i>.encoder.*` -> `past_key_values.<i>.encoder.*`)."""
    names = [o.name for o in encoder.get_outputs()]
    out = dict(zip(names, encoder.run(names, feeds), strict=True))
    cross = {n.replace("present.", "past_key_values.", 1): v for n, v in out.items() if n.startswith("present.")}
    return out["last_hidden_state"], cross


def check_seq2seq_parity(
    model: Any,
    onnx_dir: Path,
    graphs: tuple[str, ...],
    tokenizer: Any,
    max_length: int,
    texts: list[str],
    tolerance: float,
    start_id: int,
) -> dict[str, float]:
    """The encoder and decoder graphs against PyTorch: the encoder's hidden states, the decoder's
    logits on the first step (no past) and on one more step fed the graph's own past key values,
    fail past `tolerance`; then the greedy tokens of all prompts in one (right-padded) batch (the
    model tier's `OnnxEncoderDecoder`) against PyTorch's `generate(do_sample=False)`, exactly."""
    import onnxruntime as ort
    import torch

    from model_svc.backends.onnx import OnnxEncoderDecoder
    from splitserve.export.onnx import encoder_states as encode
    from splitserve.export.onnx.decoder import cache_kwarg, cache_of

    model = unwrapped(model)
    encoder = ort.InferenceSession(str(onnx_dir / graphs[0]), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(onnx_dir / graphs[1]), providers=["CPUExecutionProvider"])
    kwarg = cache_kwarg(model)
    parity = Parity(tolerance)
    for text in texts:
        ids = np.asarray([tokenizer(text, truncation=True, max_length=max_length)["input_ids"]], dtype=np.int64)
        mask = np.ones_like(ids)
        hidden, cross = cross_feeds(encoder, {"input_ids": ids, "attention_mask": mask})
        first, nxt, second = decoder_two_steps(
            decoder, np.asarray([[start_id]], dtype=np.int64), {**cross, "encoder_attention_mask": mask}
        )
        with torch.inference_mode():
            t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
            t_hidden = encode(model, t_ids, t_mask)
            t1 = model(encoder_outputs=(t_hidden,), attention_mask=t_mask, decoder_input_ids=torch.tensor([[start_id]]))
            t2 = model(
                encoder_outputs=(t_hidden,),
                attention_mask=t_mask,
                decoder_input_ids=torch.tensor([[nxt]]),
                **{kwarg: cache_of(t1)},
            )
        pairs = [
            (t_hidden[0].float().numpy(), hidden[0], "ONNX encoder hidden states"),
            (t1.logits[0].float().numpy(), first[0], "ONNX decoder logits (first step)"),
            (t2.logits[0].float().numpy(), second[0], "ONNX decoder logits (with past)"),
        ]
        for expected, actual, what in pairs:
            parity.compare(expected, actual, what)
    limit = min(max_length, GREEDY_PROMPT_TOKENS)
    prompts = [np.asarray(tokenizer(t, truncation=True, max_length=limit)["input_ids"], dtype=np.int64) for t in texts]
    ids, mask = _padded(prompts, left=False)
    expected = torch_greedy(model, {"input_ids": ids, "attention_mask": mask}, np.asarray([start_id]))
    stepper = OnnxEncoderDecoder(encoder, decoder, [start_id])
    same_tokens(expected, onnx_greedy(stepper, prompts), "ONNX greedy tokens (padded batch)")
    return parity.metrics()
