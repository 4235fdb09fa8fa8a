"""The model as the decoding loop sees it: a `Stepper` runs one forward pass at a time, a
decoder-only LM (`DecoderSteps`) or an encoder-decoder whose encoder runs once per prompt
(`EncoderDecoderSteps`). Backends (ONNX Runtime, PyTorch) supply the passes and their past key
values' handling; the loop (`search`) chooses the tokens."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Stepper(Protocol):
    """One model: `start_rows` runs several prompts as one batch, `start` one prompt for `beams`
    hypotheses; `step` appends one token per row; `reorder` keeps (and orders) some rows.
    `decoder_prompt`: an encoder-decoder's decoder prompt for these rows (a Whisper request's
    language, task and timestamps); empty: the model's own."""

    def start_rows(
        self, prompts: list[np.ndarray], decoder_prompt: tuple[int, ...] = ()
    ) -> tuple[np.ndarray, Any, list[list[int]]]:
        """Run the prompts (int64 [n_i] each) together, padded; return the next-token logits
        [rows, vocab], the state, and each row's ids as `start` returns them."""
        ...

    def start(
        self, prompt: np.ndarray, beams: int, decoder_prompt: tuple[int, ...] = ()
    ) -> tuple[np.ndarray, Any, list[int]]:
        """Run the prompt (int64 [n]) for `beams` identical hypotheses; return the next-token logits
        [beams, vocab], the state (past key values), and the ids the decoder has so far: the prompt
        for a decoder-only LM, [decoder_start_token_id] for an encoder-decoder."""
        ...

    def step(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """Append one token per hypothesis (int64 [beams]); return logits [beams, vocab], state."""
        ...

    def reorder(self, state: Any, index: np.ndarray) -> Any:
        """The state of hypotheses `index` (int64 [beams]), in that order (beam search)."""
        ...


class DecoderSteps:
    """`Stepper` of a decoder-only LM, for a backend that supplies one forward pass (`run`) and
    its past key values' handling (`empty_past`, `repeat`, `take`). Prompts of different lengths
    are left-padded (masked, with position ids counting real tokens only, as `generate` does).
    State: (past, attention mask so far [rows, tokens])."""

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray, past: Any
    ) -> tuple[np.ndarray, Any]:
        """input_ids int64 [rows, n] after `past`; the mask covers past and new tokens; returns
        the logits of the last position [rows, vocab] and the new past."""
        raise NotImplementedError

    def empty_past(self, rows: int) -> Any:
        raise NotImplementedError

    def repeat(self, past: Any, beams: int) -> Any:
        raise NotImplementedError

    def take(self, past: Any, index: np.ndarray) -> Any:
        raise NotImplementedError

    def start_rows(
        self, prompts: list[np.ndarray], decoder_prompt: tuple[int, ...] = ()
    ) -> tuple[np.ndarray, Any, list[list[int]]]:
        ids, mask = _pad(prompts, left=True)
        positions = np.maximum(mask.cumsum(axis=1) - 1, 0)
        logits, past = self.run(ids, mask, positions, self.empty_past(len(prompts)))
        return logits, (past, mask), [[int(t) for t in prompt] for prompt in prompts]

    def start(
        self, prompt: np.ndarray, beams: int, decoder_prompt: tuple[int, ...] = ()
    ) -> tuple[np.ndarray, Any, list[int]]:
        logits, (past, mask), seen = self.start_rows([prompt])
        if beams > 1:
            logits, past, mask = np.repeat(logits, beams, axis=0), self.repeat(past, beams), np.repeat(mask, beams, 0)
        return logits, (past, mask), seen[0]

    def step(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        past, mask = state
        mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=np.int64)], axis=1)
        positions = (mask.sum(axis=1) - 1)[:, None]
        logits, past = self.run(tokens.astype(np.int64)[:, None], mask, positions, past)
        return logits, (past, mask)

    def reorder(self, state: Any, index: np.ndarray) -> Any:
        past, mask = state
        return self.take(past, index), mask[index]


def _pad(prompts: list[np.ndarray], left: bool) -> tuple[np.ndarray, np.ndarray]:
    """Prompts as one int64 [rows, longest] array (padded with 0) and its attention mask."""
    width = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), width), dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for i, prompt in enumerate(prompts):
        where = slice(width - len(prompt), width) if left else slice(0, len(prompt))
        ids[i, where], mask[i, where] = prompt, 1
    return ids, mask


class EncoderDecoderSteps:
    """`Stepper` of an encoder-decoder: the backend supplies `encode` (once per prompt, right-
    padded and masked when several run together) and one decoder pass (`run`), and `take` for
    its past. State: (past, encoder states, encoder mask)."""

    start_id: int
    start_ids: list[int]  # the decoder's prompt: [start_id], or Whisper's start, language, task tokens

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray, beams: int) -> tuple[Any, Any]:
        """The prompts' encoder hidden states and attention mask, each row repeated `beams` times."""
        raise NotImplementedError

    def run(self, tokens: np.ndarray, past: Any, hidden: Any, mask: Any) -> tuple[np.ndarray, Any]:
        """tokens int64 [rows, 1] after `past` (None on the first step); logits [rows, vocab]."""
        raise NotImplementedError

    def encode_features(self, features: np.ndarray, beams: int) -> tuple[Any, Any]:
        """Speech encoder-decoders: the encoder states of input_features [rows, ...] (mask None)."""
        raise NotImplementedError

    def take(self, past: Any, hidden: Any, mask: Any, index: np.ndarray) -> tuple[Any, Any, Any]:
        raise NotImplementedError

    def _start(
        self, prompts: list[np.ndarray], beams: int, decoder_prompt: tuple[int, ...]
    ) -> tuple[np.ndarray, Any, list[list[int]]]:
        if prompts[0].ndim == 2:  # a speech encoder's features, [mel bins, frames] per row
            hidden, mask = self.encode_features(np.stack(prompts), beams)
        else:
            ids, attention = _pad(prompts, left=False)
            hidden, mask = self.encode(ids, attention, beams)
        rows = len(prompts) * beams
        start = list(decoder_prompt) or getattr(self, "start_ids", None) or [self.start_id]
        logits, past = self.run(np.tile(np.asarray(start, dtype=np.int64), (rows, 1)), None, hidden, mask)
        return logits, (past, hidden, mask), [list(start) for _ in prompts]

    def start_rows(
        self, prompts: list[np.ndarray], decoder_prompt: tuple[int, ...] = ()
    ) -> tuple[np.ndarray, Any, list[list[int]]]:
        return self._start(prompts, 1, decoder_prompt)

    def start(
        self, prompt: np.ndarray, beams: int, decoder_prompt: tuple[int, ...] = ()
    ) -> tuple[np.ndarray, Any, list[int]]:
        logits, state, seen = self._start([prompt], beams, decoder_prompt)
        return logits, state, seen[0]

    def step(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        past, hidden, mask = state
        logits, past = self.run(tokens.astype(np.int64)[:, None], past, hidden, mask)
        return logits, (past, hidden, mask)

    def reorder(self, state: Any, index: np.ndarray) -> Any:
        past, hidden, mask = state
        return self.take(past, hidden, mask, index)
