"""The decoding loops of the generation tasks, on plain numpy. Backend- and architecture-agnostic:
a `Stepper` runs the model (the ONNX graphs or the PyTorch model; a decoder-only LM, or an
encoder-decoder whose encoder runs once per prompt), this module chooses the tokens.

Semantics follow `transformers`' `generate` (what the pipelines run):
- the logits processors, in transformers' order: repetition penalty, no-repeat n-grams, min length
  and min new tokens (eos banned), forced bos (the first decoder token), forced eos (the last one);
- greedy (`do_sample=False`): argmax of the processed logits;
- sampling: then temperature, top-k, top-p (transformers' warpers), and one draw from the softmax
  with a numpy Generator seeded by `seed` (a fixed seed gives the same tokens on every call, on
  either backend);
- beam search (`num_beams > 1`, greedy only): transformers' vectorized beam search
  (`GenerationMixin._beam_search`): processors on the log-softmax, `2 * num_beams` candidates per
  step, eos candidates among the top `num_beams` finish with score / length ** length_penalty,
  `early_stopping` True / False / "never" with the same stopping heuristic;
- stops after `max_new_tokens`, on an eos token (kept in the output, as `generate` keeps it), or
  when the new tokens end with one of the token sequences of the `stop` strings (kept too).

The rows (prompts) of a request are generated together, padded and masked (greedy and sampling;
beam search runs one prompt at a time, its beams being the batch); rows are padded with -1 in
the returned [rows, new_tokens] array.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from splitserve.errors import InvalidInput

PAD = -1  # the generated_ids output's padding after a row's last token
OUTPUT = "generated_ids"
NEG = np.float32(-1.0e9)  # transformers' "never pick" score offset in beam search

# Called with (row, new tokens) as a row's tokens are chosen (greedy and sampling; beam search
# calls it once, with the whole best sequence, when the row is done).
OnTokens = Callable[[int, list[int]], None]


class Abandoned(Exception):
    """Raised by an `on_tokens` callback to stop a generation nobody waits for any more."""


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None  # None: fresh entropy per request
    stop_ids: tuple[tuple[int, ...], ...] = ()
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False or "never"
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0
    # The model's own settings (its generation_config, in serving.json), not request params.
    eos_ids: tuple[int, ...] = ()
    min_length: int = 0  # of the whole sequence the decoder sees (prompt included, decoder-only)
    forced_bos_token_id: int | None = None
    forced_eos_token_id: tuple[int, ...] = ()


class Stepper(Protocol):
    """One model: `start_rows` runs several prompts as one batch, `start` one prompt for `beams`
    hypotheses; `step` appends one token per row; `reorder` keeps (and orders) some rows."""

    def start_rows(self, prompts: list[np.ndarray]) -> tuple[np.ndarray, Any, list[list[int]]]:
        """Run the prompts (int64 [n_i] each) together, padded; return the next-token logits
        [rows, vocab], the state, and each row's ids as `start` returns them."""
        ...

    def start(self, prompt: np.ndarray, beams: int) -> tuple[np.ndarray, Any, list[int]]:
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

    def start_rows(self, prompts: list[np.ndarray]) -> tuple[np.ndarray, Any, list[list[int]]]:
        ids, mask = _pad(prompts, left=True)
        positions = np.maximum(mask.cumsum(axis=1) - 1, 0)
        logits, past = self.run(ids, mask, positions, self.empty_past(len(prompts)))
        return logits, (past, mask), [[int(t) for t in prompt] for prompt in prompts]

    def start(self, prompt: np.ndarray, beams: int) -> tuple[np.ndarray, Any, list[int]]:
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

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray, beams: int) -> tuple[Any, Any]:
        """The prompts' encoder hidden states and attention mask, each row repeated `beams` times."""
        raise NotImplementedError

    def run(self, tokens: np.ndarray, past: Any, hidden: Any, mask: Any) -> tuple[np.ndarray, Any]:
        """tokens int64 [rows, 1] after `past` (None on the first step); logits [rows, vocab]."""
        raise NotImplementedError

    def take(self, past: Any, hidden: Any, mask: Any, index: np.ndarray) -> tuple[Any, Any, Any]:
        raise NotImplementedError

    def _start(self, prompts: list[np.ndarray], beams: int) -> tuple[np.ndarray, Any, list[list[int]]]:
        ids, attention = _pad(prompts, left=False)
        hidden, mask = self.encode(ids, attention, beams)
        rows = len(prompts) * beams
        logits, past = self.run(np.full((rows, 1), self.start_id, dtype=np.int64), None, hidden, mask)
        return logits, (past, hidden, mask), [[self.start_id] for _ in prompts]

    def start_rows(self, prompts: list[np.ndarray]) -> tuple[np.ndarray, Any, list[list[int]]]:
        return self._start(prompts, 1)

    def start(self, prompt: np.ndarray, beams: int) -> tuple[np.ndarray, Any, list[int]]:
        logits, state, seen = self._start([prompt], beams)
        return logits, state, seen[0]

    def step(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        past, hidden, mask = state
        logits, past = self.run(tokens.astype(np.int64)[:, None], past, hidden, mask)
        return logits, (past, hidden, mask)

    def reorder(self, state: Any, index: np.ndarray) -> Any:
        past, hidden, mask = state
        return self.take(past, hidden, mask, index)


_KINDS: dict[str, tuple[type, ...]] = {
    "max_new_tokens": (int,),
    "do_sample": (bool,),
    "temperature": (float, int),
    "top_k": (int,),
    "top_p": (float, int),
    "repetition_penalty": (float, int),
    "seed": (int,),
    "stop_ids": (str,),
    "num_beams": (int,),
    "length_penalty": (float, int),
    "early_stopping": (str,),  # "true" | "false" | "never"
    "no_repeat_ngram_size": (int,),
    "min_new_tokens": (int,),
}
EARLY_STOPPING: dict[str, bool | str] = {"true": True, "false": False, "never": "never"}


def parse_params(values: Mapping[str, Any], generation: Mapping[str, Any] | None) -> GenerationParams:
    """Generation params from the model request's parameters (what preprocess resolved), checked
    again here: a direct Open Inference Protocol client may send anything. The model's own
    settings come from the bundle's `generation` info."""
    unknown = sorted(set(values) - set(_KINDS))
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {unknown}; generation takes {sorted(_KINDS)}")
    for name, value in values.items():
        kinds = _KINDS[name]
        if isinstance(value, bool) != (kinds == (bool,)) or not isinstance(value, kinds):
            raise InvalidInput(f"parameter {name!r}: expected {kinds[0].__name__}, got {value!r}")
    info = generation or {}
    limit = int(info.get("max_new_tokens_limit") or 256)
    early = str(values.get("early_stopping", "false")).lower()
    if early not in EARLY_STOPPING:
        raise InvalidInput(f"parameter 'early_stopping': expected true, false or never, got {early!r}")
    model = info.get("model_settings") or {}
    p = GenerationParams(
        max_new_tokens=int(values.get("max_new_tokens", min(32, limit))),
        do_sample=bool(values.get("do_sample", False)),
        temperature=float(values.get("temperature", 1.0)),
        top_k=int(values.get("top_k", 0)),
        top_p=float(values.get("top_p", 1.0)),
        repetition_penalty=float(values.get("repetition_penalty", 1.0)),
        seed=int(values["seed"]) if "seed" in values else None,
        stop_ids=_stop_ids(values.get("stop_ids")),
        num_beams=int(values.get("num_beams", 1)),
        length_penalty=float(values.get("length_penalty", 1.0)),
        early_stopping=EARLY_STOPPING[early],
        no_repeat_ngram_size=int(values.get("no_repeat_ngram_size", 0)),
        min_new_tokens=int(values.get("min_new_tokens", 0)),
        eos_ids=tuple(int(t) for t in info.get("eos_token_ids") or ()),
        min_length=int(model.get("min_length") or 0),
        forced_bos_token_id=model.get("forced_bos_token_id"),
        forced_eos_token_id=tuple(int(t) for t in model.get("forced_eos_token_id") or ()),
    )
    if not 1 <= p.max_new_tokens <= limit:
        raise InvalidInput(f"parameter 'max_new_tokens': {p.max_new_tokens} is not in [1, {limit}]")
    if p.temperature <= 0 or p.repetition_penalty <= 0 or not 0 < p.top_p <= 1 or p.top_k < 0:
        raise InvalidInput("parameters: temperature and repetition_penalty must be > 0, top_p in (0, 1], top_k >= 0")
    if p.seed is not None and p.seed < 0:
        raise InvalidInput(f"parameter 'seed': expected a non-negative integer, got {p.seed}")
    if not 1 <= p.num_beams <= 16:
        raise InvalidInput(f"parameter 'num_beams': {p.num_beams} is not in [1, 16]")
    if p.num_beams > 1 and p.do_sample:
        raise InvalidInput("parameters: num_beams > 1 with do_sample=true (beam sampling) is not supported")
    if p.no_repeat_ngram_size < 0 or p.min_new_tokens < 0:
        raise InvalidInput("parameters: no_repeat_ngram_size and min_new_tokens must be >= 0")
    return p


def _stop_ids(raw: str | None) -> tuple[tuple[int, ...], ...]:
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(
        isinstance(s, list) and s and all(isinstance(t, int) and not isinstance(t, bool) for t in s) for s in value
    ):
        raise InvalidInput("parameter 'stop_ids': expected a JSON list of non-empty lists of token ids")
    return tuple(tuple(s) for s in value)


def _banned_ngram_tokens(seen: Sequence[int], n: int) -> list[int]:
    """transformers' NoRepeatNGramLogitsProcessor: tokens that would repeat an n-gram of `seen`."""
    if len(seen) + 1 < n:
        return []
    seen = list(seen)
    prefix = tuple(seen[len(seen) + 1 - n :])
    return [seen[i + n - 1] for i in range(len(seen) - n + 1) if tuple(seen[i : i + n - 1]) == prefix]


def process(scores: np.ndarray, seen: Sequence[int], decoder_prompt_len: int, p: GenerationParams) -> np.ndarray:
    """One hypothesis' next-token scores after transformers' processors and, when sampling, its
    warpers (temperature, top-k, top-p; removed tokens at -inf). `seen`: the ids the decoder has
    (prompt and generated), of which the first `decoder_prompt_len` are its prompt."""
    scores = np.array(scores, dtype=np.float32)  # a copy
    cur_len = len(seen)
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


def _stops(new: Sequence[int], p: GenerationParams) -> bool:
    return any(len(new) >= len(s) and tuple(new[-len(s) :]) == s for s in p.stop_ids)


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


def generate_rows(
    stepper: Stepper,
    prompts: list[np.ndarray],
    params: list[GenerationParams],
    rngs: list[np.random.Generator],
    emit: Callable[[int, int], bool] | None = None,
) -> list[list[int]]:
    """The new tokens of every prompt, greedy or sampled with its own params and generator, the
    prompts run together as one batch; a row that stops leaves the batch, and so does one whose
    `emit(row, token)` returns False (nobody wants it any more)."""
    logits, state, seen = stepper.start_rows(prompts)
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
            if wanted and not (token in p.eos_ids or len(new[row]) >= p.max_new_tokens or _stops(new[row], p)):
                keep.append(i)
                tokens.append(token)
        if not keep:
            return new
        if len(keep) < len(active):
            state = stepper.reorder(state, np.asarray(keep, dtype=np.int64))
            active = [active[i] for i in keep]
        logits, state = stepper.step(np.asarray(tokens, dtype=np.int64), state)


def run_jobs(stepper: Stepper, jobs: list[Job]) -> list[list[list[int]] | Abandoned]:
    """Every job's new tokens per prompt: the greedy and sampled jobs' prompts as one batch (each
    row with its job's params, sampling from a generator seeded by (`seed`, row)); beam-search
    jobs one prompt at a time, its beams being the batch."""
    results: list[list[list[int]] | Abandoned] = [[] for _ in jobs]
    owners: list[tuple[int, int]] = []  # batch row -> (job, row in the job)
    for j, job in enumerate(jobs):
        if job.params.num_beams == 1:
            owners += [(j, r) for r in range(len(job.prompts))]
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

    if owners:
        prompts = [jobs[j].prompts[r] for j, r in owners]
        params = [jobs[j].params for j, _ in owners]
        rngs = [
            np.random.default_rng(None if p.seed is None else [p.seed, r])
            for p, (_, r) in zip(params, owners, strict=True)
        ]
        rows = generate_rows(stepper, prompts, params, rngs, lambda i, token: emit(*owners[i], [token]))
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
    logits, state, first = stepper.start(prompt, beams)
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
                int(t) in eos or cur_len + 1 >= max_len or _stops(c[prompt_len:].tolist(), p)
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
