"""transformers' logits processors and warpers, on numpy, in transformers' order: (Whisper's
suppressed tokens, at the first new token and always, and its timestamp rules), repetition penalty, no-repeat n-grams, min length and min new tokens (eos banned), forced bos (the first
decoder token), forced eos (the last one); when sampling, temperature, top-k, top-p; then the
choice of one token (argmax, or one draw from the softmax with the row's generator)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from splitserve.core.generation import GenerationParams


def _banned_ngram_tokens(seen: Sequence[int], n: int) -> list[int]:
    """transformers' NoRepeatNGramLogitsProcessor: tokens that would repeat an n-gram of `seen`."""
    if len(seen) + 1 < n:
        return []
    seen = list(seen)
    prefix = tuple(seen[len(seen) + 1 - n :])
    return [seen[i + n - 1] for i in range(len(seen) - n + 1) if tuple(seen[i : i + n - 1]) == prefix]


def _timestamp_rules(scores: np.ndarray, seen: Sequence[int], begin: int, p: GenerationParams) -> None:
    """transformers' WhisperTimeStampLogitsProcessor, in place: timestamps come in pairs (except
    before eos) and never decrease, the first new token is a timestamp (at most the
    `max_initial_timestamp_index`th), and a timestamp is forced when the timestamps' total
    probability beats every text token's."""
    assert p.no_timestamps_token_id is not None
    first = p.no_timestamps_token_id + 1  # the first timestamp token, <|0.00|>
    eos = p.eos_ids[0] if p.eos_ids else 0
    scores[p.no_timestamps_token_id] = -np.inf
    new = list(seen[begin:])
    last_was = len(new) >= 1 and new[-1] >= first
    penultimate_was = len(new) < 2 or new[-2] >= first
    if last_was:
        if penultimate_was:
            scores[first:] = -np.inf
        else:
            scores[:eos] = -np.inf
    stamps = [t for t in new if t >= first]
    lowest = first
    if stamps:
        lowest = stamps[-1] if last_was and not penultimate_was else stamps[-1] + 1
    scores[first:lowest] = -np.inf
    if len(seen) == begin:
        scores[:first] = -np.inf
        if p.max_initial_timestamp_index is not None:
            scores[first + p.max_initial_timestamp_index + 1 :] = -np.inf
    shifted = scores.astype(np.float32) - scores.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    stamp_mass = np.logaddexp.reduce(logprobs[first:]) if logprobs.size > first else -np.inf
    if stamp_mass > logprobs[:first].max():
        scores[:first] = -np.inf


def process(scores: np.ndarray, seen: Sequence[int], decoder_prompt_len: int, p: GenerationParams) -> np.ndarray:
    """One hypothesis' next-token scores after transformers' processors and, when sampling, its
    warpers (temperature, top-k, top-p; removed tokens at -inf). `seen`: the ids the decoder has
    (prompt and generated), of which the first `decoder_prompt_len` are its prompt."""
    scores = np.array(scores, dtype=np.float32)  # a copy
    cur_len = len(seen)
    # Whisper's suppressions come first (its generate puts them before the other processors).
    if p.begin_suppress_tokens and cur_len == decoder_prompt_len:
        scores[list(p.begin_suppress_tokens)] = -np.inf
    if p.suppress_tokens:
        scores[list(p.suppress_tokens)] = -np.inf
    if p.timestamps:
        _timestamp_rules(scores, seen, decoder_prompt_len, p)
    if p.repetition_penalty != 1.0 and cur_len:
        ids = np.unique(np.asarray(seen, dtype=np.int64))
        picked = scores[ids]
        scores[ids] = np.where(picked < 0, picked * p.repetition_penalty, picked / p.repetition_penalty)
    if p.no_repeat_ngram_size > 0:
        banned = _banned_ngram_tokens(seen, p.no_repeat_ngram_size)
        if banned:
            scores[banned] = -np.inf
    eos = list(p.eos_ids)
    if eos and (cur_len < p.min_length or cur_len - decoder_prompt_len < p.min_new_tokens):
        scores[eos] = -np.inf
    if p.forced_bos_token_id is not None and cur_len == 1:
        scores[:] = -np.inf
        scores[p.forced_bos_token_id] = 0
    if p.forced_eos_token_id and cur_len == decoder_prompt_len + p.max_new_tokens - 1:
        scores[:] = -np.inf
        scores[list(p.forced_eos_token_id)] = 0
    if not p.do_sample:
        return scores
    if p.temperature != 1.0:
        scores = scores / np.float32(p.temperature)
    if p.top_k > 0:
        k = min(p.top_k, scores.shape[-1])
        threshold = np.partition(scores, -k)[-k]
        scores = np.where(scores < threshold, np.float32(-np.inf), scores)
    if p.top_p < 1.0:
        # transformers' TopPLogitsWarper: drop the lowest tokens whose cumulative probability
        # (ascending) is <= 1 - top_p, keeping at least the top one.
        order = np.argsort(scores, kind="stable")
        ascending = scores[order].astype(np.float64)
        probs = np.exp(ascending - ascending[-1])
        cumulative = np.cumsum(probs / probs.sum())
        remove = cumulative <= (1 - p.top_p)
        remove[-1] = False
        scores[order[remove]] = -np.inf
    return scores


def choose(
    scores: np.ndarray, seen: Sequence[int], decoder_prompt_len: int, p: GenerationParams, rng: np.random.Generator
) -> int:
    """The next token from the last position's logits: argmax, or one draw from the softmax."""
    scores = process(scores, seen, decoder_prompt_len, p)
    if not p.do_sample:
        return int(np.argmax(scores))
    probs = np.exp((scores - scores.max()).astype(np.float64))
    probs /= probs.sum()
    drawn = int(np.searchsorted(np.cumsum(probs), rng.random(), side="right"))
    return min(drawn, len(probs) - 1)


def ends_with_stop(new: Sequence[int], p: GenerationParams) -> bool:
    return any(len(new) >= len(s) and tuple(new[-len(s) :]) == s for s in p.stop_ids)
