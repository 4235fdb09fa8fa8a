"""The exported graphs checked against PyTorch on the sample texts: an encoder's outputs, a
decoder-only LM's logits (prefill and one step with past), an encoder-decoder's encoder states and
decoder logits. Export fails past the tolerance; the numbers become MLflow metrics.

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


def check_generation_parity(
    model: Any, onnx_path: Path, tokenizer: Any, max_length: int, texts: list[str], tolerance: float
) -> dict[str, float]:
    """The decoder graph against PyTorch: the logits of every prompt position (prefill, empty past)
    and of one more step fed the graph's own present key values; fail past `tolerance`."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    out_names = [o.name for o in session.get_outputs()]
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    parity = Parity(tolerance)
    for text in texts:
        ids = np.asarray([tokenizer(text, truncation=True, max_length=max_length - 1)["input_ids"]], dtype=np.int64)
        n = ids.shape[1]
        feeds: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "position_ids" in inputs:
            feeds["position_ids"] = np.arange(n, dtype=np.int64)[None]
        for name in past_names:
            _, heads, _, dim = inputs[name].shape
            feeds[name] = np.zeros((1, int(heads), 0, int(dim)), dtype=np.float32)
        with torch.inference_mode():
            kwargs = {"position_ids": torch.arange(n)[None]} if "position_ids" in inputs else {}
            t_out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.ones(1, n, dtype=torch.long), **kwargs)
            o_out = dict(zip(out_names, session.run(out_names, feeds), strict=True))
            steps = [(t_out.logits[0].float().numpy(), o_out["logits"][0])]
            nxt = int(o_out["logits"][0, -1].argmax())
            feeds2: dict[str, np.ndarray] = {
                "input_ids": np.asarray([[nxt]], dtype=np.int64),
                "attention_mask": np.ones((1, n + 1), dtype=np.int64),
            }
            if "position_ids" in inputs:
                feeds2["position_ids"] = np.asarray([[n]], dtype=np.int64)
            for name in past_names:
                feeds2[name] = o_out[name.replace("past_key_values.", "present.")]
            kwargs = {"position_ids": torch.tensor([[n]])} if "position_ids" in inputs else {}
            t2 = model(
                input_ids=torch.tensor([[nxt]]),
                attention_mask=torch.ones(1, n + 1, dtype=torch.long),
                past_key_values=t_out.past_key_values,
                **kwargs,
            )
            o2 = session.run(["logits"], feeds2)[0]
            steps.append((t2.logits[0].float().numpy(), o2[0]))
        for expected, actual in steps:
            parity.compare(expected, actual, "ONNX decoder logits")
    return parity.metrics()


def decoder_two_steps(
    decoder: Any, first_ids: np.ndarray, fixed: dict[str, np.ndarray], kv: tuple[int, int] | None = None
) -> tuple[np.ndarray, int, np.ndarray]:
    """Two steps of a merged decoder graph (one batch row): `first_ids` without a past, then the
    first step's argmax token fed the past key values the graph returned. `fixed`: the inputs
    both steps take (the encoder's states, its mask); `kv`: (heads, head dim) of the past, when the
    graph's shapes do not say. Returns (the first step's logits, that token, the second's logits)."""
    shapes = {i.name: i.shape for i in decoder.get_inputs()}
    past_names = [n for n in shapes if n.startswith("past_key_values.")]
    present = {n: n.replace("past_key_values.", "present.", 1) for n in past_names}
    outputs = ["logits", *present.values()]
    heads, dim = kv or (int(shapes[past_names[0]][1]), int(shapes[past_names[0]][3]))
    feeds = {
        "input_ids": first_ids,
        **fixed,
        "use_cache_branch": np.asarray([False]),
        **dict.fromkeys(past_names, np.zeros((1, heads, 0, dim), dtype=np.float32)),
    }
    first = dict(zip(outputs, decoder.run(outputs, feeds), strict=True))
    token = int(first["logits"][0, -1].argmax())
    feeds.update(
        {n: first[present[n]] for n in past_names},
        input_ids=np.asarray([[token]], dtype=np.int64),
        use_cache_branch=np.asarray([True]),
    )
    return first["logits"], token, decoder.run(["logits"], feeds)[0]


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
    """The encoder and merged decoder graphs against PyTorch: the encoder's hidden states, the
    decoder's logits on the first step (no past) and on one more step fed the graph's own past key
    values; fail past `tolerance`."""
    import onnxruntime as ort
    import torch

    from splitserve.export.onnx import encoder_states as encode

    encoder = ort.InferenceSession(str(onnx_dir / graphs[0]), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(onnx_dir / graphs[1]), providers=["CPUExecutionProvider"])
    parity = Parity(tolerance)
    for text in texts:
        ids = np.asarray([tokenizer(text, truncation=True, max_length=max_length)["input_ids"]], dtype=np.int64)
        mask = np.ones_like(ids)
        (hidden,) = encoder.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
        first, nxt, second = decoder_two_steps(
            decoder,
            np.asarray([[start_id]], dtype=np.int64),
            {"encoder_hidden_states": hidden, "encoder_attention_mask": mask},
        )
        with torch.inference_mode():
            t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
            t_hidden = encode(model, t_ids, t_mask)
            t1 = model(encoder_outputs=(t_hidden,), attention_mask=t_mask, decoder_input_ids=torch.tensor([[start_id]]))
            t2 = model(
                encoder_outputs=(t_hidden,),
                attention_mask=t_mask,
                decoder_input_ids=torch.tensor([[nxt]]),
                past_key_values=t1.past_key_values,
            )
        pairs = [
            (t_hidden[0].float().numpy(), hidden[0], "ONNX encoder hidden states"),
            (t1.logits[0].float().numpy(), first[0], "ONNX decoder logits (first step)"),
            (t2.logits[0].float().numpy(), second[0], "ONNX decoder logits (with past)"),
        ]
        for expected, actual, what in pairs:
            parity.compare(expected, actual, what)
    return parity.metrics()
