"""Scheduling generations: each request is a `Job` (its prompts, params and streaming callback);
`run_jobs` runs several at once (the greedy and sampled jobs' prompts as one batch, each row with
its job's params; beam-search jobs one prompt at a time). `generate` runs one request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from model_svc.generation.search import beam_search, generate_rows
from model_svc.generation.steppers import Stepper
from splitserve.core.errors import InvalidInput
from splitserve.core.generation import OUTPUT, PAD, GenerationParams

# Called with (row, new tokens) as a row's tokens are chosen (greedy and sampling; beam search
# calls it once, with the whole best sequence, when the row is done).
OnTokens = Callable[[int, list[int]], None]


class Abandoned(Exception):
    """Raised by an `on_tokens` callback to stop a generation nobody waits for any more."""


@dataclass
class Job:
    """One request's generation: its prompts (int64 [n_i], unpadded), params and streaming
    callback. `on_tokens(row, tokens)` may raise `Abandoned`: the job's rows then leave the batch
    and its result is that exception."""

    prompts: list[np.ndarray]
    params: GenerationParams
    on_tokens: OnTokens | None = None

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.params.num_beams


def run_jobs(stepper: Stepper, jobs: list[Job]) -> list[list[list[int]] | Abandoned]:
    """Every job's new tokens per prompt: the greedy and sampled jobs' prompts as one batch per
    decoder prompt (each row with its job's params, sampling from a generator seeded by (`seed`, row)); beam-search
    jobs one prompt at a time, its beams being the batch."""
    results: list[list[list[int]] | Abandoned] = [[] for _ in jobs]
    groups: dict[tuple[int, ...], list[tuple[int, int]]] = {}  # decoder prompt -> batch rows: (job, row in the job)
    for j, job in enumerate(jobs):
        if job.params.num_beams == 1:
            groups.setdefault(job.params.decoder_prompt, []).extend((j, r) for r in range(len(job.prompts)))
    gone: dict[int, Abandoned] = {}

    def emit(job_index: int, row: int, tokens: list[int]) -> bool:
        if job_index in gone:
            return False
        callback = jobs[job_index].on_tokens
        try:
            if callback is not None:
                callback(row, tokens)
        except Abandoned as exc:
            gone[job_index] = exc
            return False
        return True

    for owners in groups.values():  # rows with one decoder prompt run as one batch
        prompts = [jobs[j].prompts[r] for j, r in owners]
        params = [jobs[j].params for j, _ in owners]
        rngs = [
            np.random.default_rng(None if p.seed is None else [p.seed, r])
            for p, (_, r) in zip(params, owners, strict=True)
        ]

        def emit_row(i: int, token: int, owners: list[tuple[int, int]] = owners) -> bool:
            return emit(*owners[i], [token])

        rows = generate_rows(stepper, prompts, params, rngs, emit_row)
        for (j, _), tokens in zip(owners, rows, strict=True):
            cast(list, results[j]).append(tokens)
    for j, job in enumerate(jobs):
        if job.params.num_beams > 1:
            for r, prompt in enumerate(job.prompts):
                if j not in gone:
                    best = beam_search(stepper, prompt, job.params)
                    cast(list, results[j]).append(best)
                    emit(j, r, best)
    for j, exc in gone.items():
        results[j] = exc
    return results


def prompts_of(
    input_ids: np.ndarray, attention_mask: np.ndarray, p: GenerationParams, max_length: int | None
) -> list[np.ndarray]:
    """A request's prompts without their padding (the mask says which tokens are real), checked:
    `max_length` is the most positions of a decoder-only LM, which prompt + max_new_tokens must
    fit in (None for encoder-decoders)."""
    prompts = []
    for ids, mask in zip(input_ids, attention_mask, strict=True):
        prompt = ids[mask.astype(bool)]
        if prompt.size == 0:
            raise InvalidInput("a prompt has no tokens (attention_mask is all zeros)")
        if max_length is not None and prompt.size + p.max_new_tokens > max_length:
            raise InvalidInput(
                f"a prompt of {prompt.size} tokens with max_new_tokens={p.max_new_tokens} exceeds the model's "
                f"maximum of {max_length} tokens"
            )
        prompts.append(prompt)
    return prompts


def prompts_from(inputs: dict[str, np.ndarray], p: GenerationParams, config: Any) -> list[np.ndarray]:
    """A request's prompts: its rows of `input_features` (a speech encoder's, which must leave room
    for the decoder's prompt and max_new_tokens in its positions), else its token prompts."""
    if "input_features" in inputs:
        prompt = len(p.decoder_prompt or config.generation.decoder_prompt_ids)
        if prompt + p.max_new_tokens > config.max_length:
            raise InvalidInput(
                f"max_new_tokens={p.max_new_tokens} after the decoder's prompt of {prompt} "
                f"tokens exceeds the model's {config.max_length} decoder positions"
            )
        return list(inputs["input_features"])
    return prompts_of(inputs["input_ids"], inputs["attention_mask"], p, config.max_positions)


def as_output(rows: list[list[int]]) -> dict[str, np.ndarray]:
    """{"generated_ids": int64 [rows, longest]}, padded with -1."""
    out = np.full((len(rows), max(len(r) for r in rows)), PAD, dtype=np.int64)
    for i, tokens in enumerate(rows):
        out[i, : len(tokens)] = tokens
    return {OUTPUT: out}


def generate(
    stepper: Stepper,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    p: GenerationParams,
    max_length: int | None = None,
    on_tokens: OnTokens | None = None,
) -> dict[str, np.ndarray]:
    """Generate for every row of one request; `on_tokens(row, tokens)` streams the tokens as
    they come (raising `Abandoned` stops the generation, and raises it here)."""
    (result,) = run_jobs(stepper, [Job(prompts_of(input_ids, attention_mask, p, max_length), p, on_tokens)])
    if isinstance(result, Abandoned):
        raise result
    return as_output(result)
