"""The model tier's steppers over the generation graphs' layouts (`model_svc.backends.onnx`), with
fake ONNX Runtime sessions: what each step feeds, and how the past and the encoder's cross-attention
keys/values follow beams. The real graphs: tests/export/test_onnx_generation_export.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from model_svc.backends.onnx import OnnxDecoder, OnnxEncoderDecoder

HEADS, DIM, VOCAB = 2, 3, 50


class FakeSession:
    """`inputs`: name -> shape; `compute(feeds)` -> outputs by name. Records every run's feeds."""

    def __init__(self, inputs: dict[str, list[Any]], compute: Any):
        self.inputs, self.compute, self.calls = inputs, compute, []

    def get_inputs(self) -> list[Any]:
        return [SimpleNamespace(name=n, shape=s) for n, s in self.inputs.items()]

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls.append(feeds)
        result = self.compute(feeds)
        return [result[n] for n in outputs]


def _kv(values: np.ndarray) -> np.ndarray:
    """[rows, tokens] -> [rows, heads, tokens, dim] (a past that remembers the tokens)."""
    return np.broadcast_to(values[:, None, :, None], (*values.shape[:1], HEADS, values.shape[1], DIM)).astype(
        np.float32
    )


def _one_hot(index: np.ndarray) -> np.ndarray:
    return np.eye(VOCAB, dtype=np.float32)[index % VOCAB][:, None]  # [rows, 1, vocab]


def test_decoder_grows_its_past_and_follows_beams() -> None:
    names = ["past_key_values.0.key", "past_key_values.0.value"]
    shape = ["batch", HEADS, "past", DIM]

    def compute(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen = np.concatenate([feeds[names[0]][:, 0, :, 0], feeds["input_ids"].astype(np.float32)], axis=1)
        return {"logits": _one_hot(seen.sum(1).astype(int)), "present.0.key": _kv(seen), "present.0.value": _kv(seen)}

    session = FakeSession(
        {"input_ids": [], "attention_mask": [], "position_ids": [], **dict.fromkeys(names, shape)}, compute
    )
    stepper = OnnxDecoder(session)
    logits, state, seen = stepper.start_rows([np.asarray([3, 4]), np.asarray([5])])
    assert seen == [[3, 4], [5]] and logits.argmax(-1).tolist() == [7, 5]
    first = session.calls[0]
    assert first["input_ids"].tolist() == [[3, 4], [0, 5]] and first["position_ids"].tolist() == [[0, 1], [0, 0]]
    assert first[names[0]].shape == (2, HEADS, 0, DIM)
    logits, state = stepper.step(np.asarray([1, 2]), state)
    assert logits.argmax(-1).tolist() == [8, 7] and session.calls[1]["attention_mask"].tolist() == [
        [1, 1, 1],
        [0, 1, 1],
    ]
    assert session.calls[1]["position_ids"].tolist() == [[2], [1]]
    state = stepper.reorder(state, np.asarray([1, 1]))
    logits, _ = stepper.step(np.asarray([0, 10]), state)
    assert logits.argmax(-1).tolist() == [7, 17]


def _cross(rows: np.ndarray) -> np.ndarray:
    return _kv(np.repeat(rows[:, None], 4, axis=1))  # 4 encoder positions, each holding the prompt's sum


def test_encoder_decoder_feeds_the_cross_keys_values_and_reorders_them() -> None:
    cross = ["past_key_values.0.encoder.key", "past_key_values.0.encoder.value"]
    own = ["past_key_values.0.decoder.key", "past_key_values.0.decoder.value"]
    shape = ["batch", HEADS, "len", DIM]
    encoder = FakeSession(
        {"input_ids": [], "attention_mask": []},
        lambda f: {
            "present.0.encoder.key": _cross((f["input_ids"] * f["attention_mask"]).sum(1).astype(np.float32)),
            "present.0.encoder.value": _cross(np.zeros(len(f["input_ids"]), np.float32)),
        },
    )

    def decode(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen = np.concatenate([feeds[own[0]][:, 0, :, 0], feeds["input_ids"].astype(np.float32)], axis=1)
        total = seen.sum(1) + 100 * feeds[cross[0]][:, 0, 0, 0]
        present = {n.replace("past_key_values.", "present."): _kv(seen) for n in own}
        return {"logits": _one_hot(total.astype(int)), **present}

    decoder = FakeSession({"input_ids": [], "encoder_attention_mask": [], **dict.fromkeys(own + cross, shape)}, decode)
    stepper = OnnxEncoderDecoder(encoder, decoder, [1])
    logits, state, seen = stepper.start(np.asarray([2]), beams=2)
    assert seen == [1] and logits.argmax(-1).tolist() == [(1 + 200) % VOCAB] * 2
    first = decoder.calls[0]
    assert first[cross[0]].shape == (2, HEADS, 4, DIM) and first[own[0]].shape == (2, HEADS, 0, DIM)
    assert "use_cache_branch" not in first and first["encoder_attention_mask"].tolist() == [[1], [1]]
    logits, state = stepper.step(np.asarray([3, 4]), state)
    assert logits.argmax(-1).tolist() == [(4 + 200) % VOCAB, (5 + 200) % VOCAB]
    # Two prompts, then keep the second's row twice: its cross keys/values go with it.
    logits, state, _ = stepper.start_rows([np.asarray([2]), np.asarray([3, 1])])
    state = stepper.reorder(state, np.asarray([1, 1]))
    logits, state = stepper.step(np.asarray([5, 6]), state)
    assert decoder.calls[-1][cross[0]][:, 0, 0, 0].tolist() == [4, 4]
    assert decoder.calls[-1]["encoder_attention_mask"].tolist() == [[1, 1], [1, 1]]


def test_optimum_bundles_merged_decoder_still_runs() -> None:
    """Optimum's layout: the encoder's states at every step, `use_cache_branch`, the cross past
    computed on the first step and kept."""
    names = [f"past_key_values.0.{part}.{kv}" for part in ("decoder", "encoder") for kv in ("key", "value")]
    encoder = FakeSession({"input_features": []}, lambda f: {"last_hidden_state": f["input_features"][:, :1, :4]})

    def decode(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        branch = bool(feeds["use_cache_branch"][0])
        states = feeds["encoder_hidden_states"][:, 0, :]
        cross = feeds[names[2]] if branch else _kv(states)
        seen = np.concatenate([feeds[names[0]][:, 0, :, 0], feeds["input_ids"].astype(np.float32)], axis=1)
        total = seen.sum(1) + cross[:, 0, 0, 0]
        present = {"present.0.decoder.key": _kv(seen), "present.0.decoder.value": _kv(seen)}
        cross_out = cross if not branch else np.zeros((len(seen), HEADS, 1, DIM), np.float32)  # Optimum: junk
        return {"logits": _one_hot(total.astype(int)), **present, "present.0.encoder.key": cross_out,
                "present.0.encoder.value": cross_out}  # fmt: skip

    decoder = FakeSession(
        {
            "input_ids": [],
            "encoder_hidden_states": [],
            "use_cache_branch": [],
            **dict.fromkeys(names, ["b", "h", "s", "d"]),
        },
        decode,
    )
    stepper = OnnxEncoderDecoder(encoder, decoder, [7, 8], kv=(HEADS, DIM))
    features = np.full((2, 3), 10.0, dtype=np.float32)
    logits, state, seen = stepper.start(features, beams=1)
    assert seen == [7, 8] and logits.argmax(-1).tolist() == [25]
    assert decoder.calls[0]["use_cache_branch"].tolist() == [False]
    assert decoder.calls[0][names[2]].shape == (1, HEADS, 0, DIM)
    logits, state = stepper.step(np.asarray([1]), state)
    assert decoder.calls[1]["use_cache_branch"].tolist() == [True] and logits.argmax(-1).tolist() == [26]
    logits, _ = stepper.step(np.asarray([1]), state)
    assert logits.argmax(-1).tolist() == [27]  # the cross past of the first step, not the junk after it
