"""The decoding loops: greedy and sampled rows generated together as one batch
(`generate_rows`), and transformers' vectorized beam search for one prompt (`beam_search`,
`GenerationMixin._beam_search`: processors on the log-softmax, `2 * num_beams` candidates per step,
eos candidates among the top `num_beams` finish with score / length ** length_penalty,
`early_stopping` True / False / "never" with the same stopping heuristic). Both stop after
`max_new_tokens`, on an eos token (kept in the output, as `generate` keeps it), or when the new
tokens end with one of the token sequences of the `stop` strings (kept too)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model_svc.generation.processors import choose, ends_with_stop, process
from model_svc.generation.steppers import Stepper
from splitserve.core.generation import GenerationParams

NEG = np.float32(-1.0e9)  # transformers' "never pick" score offset in beam search


def generate_rows(
    stepper: Stepper,
    prompts: list[np.ndarray],
    params: list[GenerationParams],
    rngs: list[np.random.Generator],
    emit: Callable[[int, int], bool] | None = None,
) -> list[list[int]]:
    """The new tokens of every prompt, greedy or sampled with its own params and generator, the
    prompts run together as one batch; a row that stops leaves the batch, and so does one whose
    `emit(row, token)` returns False (nobody wants it any more). The rows share one decoder prompt
    (the first row's params say which)."""
    logits, state, seen = stepper.start_rows(prompts, params[0].decoder_prompt)
    decoder_prompt_len = [len(s) for s in seen]
    new: list[list[int]] = [[] for _ in prompts]
    active = list(range(len(prompts)))  # the batch's rows, by prompt index
    while True:
        keep, tokens = [], []
        for i, row in enumerate(active):
            p = params[row]
            token = choose(logits[i], seen[row], decoder_prompt_len[row], p, rngs[row])
            new[row].append(token)
            seen[row].append(token)
            wanted = emit(row, token) if emit is not None else True
            if wanted and not (token in p.eos_ids or len(new[row]) >= p.max_new_tokens or ends_with_stop(new[row], p)):
                keep.append(i)
                tokens.append(token)
        if not keep:
            return new
        if len(keep) < len(active):
            state = stepper.reorder(state, np.asarray(keep, dtype=np.int64))
            active = [active[i] for i in keep]
        logits, state = stepper.step(np.asarray(tokens, dtype=np.int64), state)


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (ties: the lower index first)."""
    return np.argsort(-values, kind="stable")[:k]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float32)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


def beam_search(stepper: Stepper, prompt: np.ndarray, p: GenerationParams) -> list[int]:
    """transformers' `_beam_search` for one prompt (batch size 1); returns the best hypothesis'
    new tokens."""
    beams = p.num_beams
    logits, state, first = stepper.start(prompt, beams, p.decoder_prompt)
    prompt_len = len(first)
    vocab = logits.shape[-1]
    max_len = prompt_len + p.max_new_tokens
    keep = max(2, 1 + len(p.eos_ids)) * beams
    eos = set(p.eos_ids)
    running = np.tile(np.asarray(first, dtype=np.int64), (beams, 1))  # [beams, cur_len]
    running_scores = np.zeros(beams, dtype=np.float32)
    running_scores[1:] = NEG
    finished: list[list[int]] = [list(first)] * beams
    finished_scores = np.full(beams, NEG, dtype=np.float32)
    is_finished = np.zeros(beams, dtype=bool)
    improvable = True  # transformers' is_early_stop_heuristic_unsatisfied
    cur_len = prompt_len
    while True:
        log_probs = _log_softmax(logits)
        log_probs = np.stack([process(log_probs[b], running[b].tolist(), prompt_len, p) for b in range(beams)])
        accumulated = (log_probs + running_scores[:, None]).reshape(-1)
        top = _top(accumulated, keep)
        top_scores = accumulated[top]
        source, tokens = top // vocab, top % vocab
        candidates = np.concatenate([running[source], tokens[:, None]], axis=1)  # [keep, cur_len + 1]
        hits = np.asarray(
            [
                int(t) in eos or cur_len + 1 >= max_len or ends_with_stop(c[prompt_len:].tolist(), p)
                for t, c in zip(tokens, candidates, strict=True)
            ]
        )
        # The best `beams` candidates that did not finish run on.
        running_candidates = top_scores + hits.astype(np.float32) * NEG
        chosen = _top(running_candidates, beams)
        running, running_scores, index = candidates[chosen], running_candidates[chosen], source[chosen]
        # Finished candidates among the top `beams` join the finished hypotheses if they score higher.
        just_finished = hits & (np.arange(keep) < beams)
        scores = top_scores / np.float32((cur_len + 1 - prompt_len) ** p.length_penalty)
        if is_finished.all() and p.early_stopping is True:
            scores = scores + NEG
        if not improvable:
            scores = scores + NEG
        scores = scores + (~just_finished).astype(np.float32) * NEG
        merged_scores = np.concatenate([finished_scores, scores])
        merged = [*finished, *candidates.tolist()]
        merged_finished = np.concatenate([is_finished, just_finished])
        best = _top(merged_scores, beams)
        finished = [merged[i] for i in best]
        finished_scores, is_finished = merged_scores[best], merged_finished[best]
        cur_len += 1
        if p.early_stopping == "never" and p.length_penalty > 0.0:
            hypothetical = max_len - prompt_len
        else:
            hypothetical = cur_len - prompt_len
        best_running = running_scores[0] / np.float32(hypothetical**p.length_penalty)
        worst_finished = finished_scores.min() if is_finished.all() else NEG
        improvable = improvable and bool(best_running > worst_finished)
        open_beam = not (is_finished.all() and p.early_stopping is True)
        if not (improvable and open_beam and not hits.all()):
            break
        state = stepper.reorder(state, index)
        logits, state = stepper.step(running[:, -1], state)
    return [int(t) for t in finished[0][prompt_len:]]
