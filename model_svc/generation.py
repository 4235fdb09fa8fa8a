"""The decoding loop of text-generation, on plain numpy: prefill the prompt, then one token at a
time, feeding back the past key values. Backend-agnostic: a `Decoder` runs one forward pass (the
ONNX decoder graph, or the PyTorch model), this module chooses the tokens.

Semantics follow `transformers`' `generate` (what the text-generation pipeline runs):
- greedy (`do_sample=False`): argmax of the logits after the repetition penalty;
- sampling: repetition penalty, then temperature, top-k, top-p (in that order, as transformers'
  processors and warpers), then one draw from the softmax with a numpy Generator seeded by `seed`
  (a fixed seed gives the same tokens on every call, and on either backend);
- stops after `max_new_tokens`, on an eos token (kept in the output, as `generate` keeps it), or
  when the new tokens end with one of the token sequences of the `stop` strings (kept too).

Each row (prompt) of a request is generated on its own, unpadded, like the pipeline runs each
prompt; rows are padded with -1 in the returned [rows, new_tokens] array. Beam search is not
implemented (`num_beams > 1` is refused by the params).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from splitserve.errors import InvalidInput

PAD = -1  # the generated_ids output's padding after a row's last token
OUTPUT = "generated_ids"


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


class Decoder(Protocol):
    def forward(self, input_ids: np.ndarray, position_ids: np.ndarray, past: Any) -> tuple[np.ndarray, Any]:
        """Run int64 [1, n] new tokens at positions [1, n] after `past` (None at first); returns
        the float logits of the last position [vocab] and the new past."""
        ...


_KINDS: dict[str, tuple[type, ...]] = {
    "max_new_tokens": (int,),
    "do_sample": (bool,),
    "temperature": (float, int),
    "top_k": (int,),
    "top_p": (float, int),
    "repetition_penalty": (float, int),
    "seed": (int,),
    "stop_ids": (str,),
}


def parse_params(values: Mapping[str, Any], generation: Mapping[str, Any] | None) -> GenerationParams:
    """Generation params from the model request's parameters (what preprocess resolved), checked
    again here: a direct Open Inference Protocol client may send anything."""
    unknown = sorted(set(values) - set(_KINDS))
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {unknown}; text-generation takes {sorted(_KINDS)}")
    for name, value in values.items():
        kinds = _KINDS[name]
        if isinstance(value, bool) != (kinds == (bool,)) or not isinstance(value, kinds):
            raise InvalidInput(f"parameter {name!r}: expected {kinds[0].__name__}, got {value!r}")
    limit = int((generation or {}).get("max_new_tokens_limit") or 256)
    p = GenerationParams(
        max_new_tokens=int(values.get("max_new_tokens", min(32, limit))),
        do_sample=bool(values.get("do_sample", False)),
        temperature=float(values.get("temperature", 1.0)),
        top_k=int(values.get("top_k", 0)),
        top_p=float(values.get("top_p", 1.0)),
        repetition_penalty=float(values.get("repetition_penalty", 1.0)),
        seed=int(values["seed"]) if "seed" in values else None,
        stop_ids=_stop_ids(values.get("stop_ids")),
    )
    if not 1 <= p.max_new_tokens <= limit:
        raise InvalidInput(f"parameter 'max_new_tokens': {p.max_new_tokens} is not in [1, {limit}]")
    if p.temperature <= 0 or p.repetition_penalty <= 0 or not 0 < p.top_p <= 1 or p.top_k < 0:
        raise InvalidInput("parameters: temperature and repetition_penalty must be > 0, top_p in (0, 1], top_k >= 0")
    if p.seed is not None and p.seed < 0:
        raise InvalidInput(f"parameter 'seed': expected a non-negative integer, got {p.seed}")
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


def process(scores: np.ndarray, seen: Sequence[int], p: GenerationParams) -> np.ndarray:
    """The last position's logits after transformers' processors (repetition penalty) and, when
    sampling, its warpers (temperature, top-k, top-p; removed tokens at -inf)."""
    scores = np.array(scores, dtype=np.float32)  # a copy
    if p.repetition_penalty != 1.0 and len(seen):
        ids = np.unique(np.asarray(seen, dtype=np.int64))
        picked = scores[ids]
        scores[ids] = np.where(picked < 0, picked * p.repetition_penalty, picked / p.repetition_penalty)
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


def choose(scores: np.ndarray, seen: Sequence[int], p: GenerationParams, rng: np.random.Generator) -> int:
    """The next token from the last position's logits: argmax, or one draw from the softmax."""
    scores = process(scores, seen, p)
    if not p.do_sample:
        return int(np.argmax(scores))
    probs = np.exp((scores - scores.max()).astype(np.float64))
    probs /= probs.sum()
    drawn = int(np.searchsorted(np.cumsum(probs), rng.random(), side="right"))
    return min(drawn, len(probs) - 1)


def generate_row(
    decoder: Decoder, prompt: np.ndarray, p: GenerationParams, eos_ids: Sequence[int], rng: np.random.Generator
) -> list[int]:
    """The new tokens for one prompt (int64 [n], no padding)."""
    n = int(prompt.shape[0])
    logits, past = decoder.forward(prompt[None].astype(np.int64), np.arange(n, dtype=np.int64)[None], None)
    seen = [int(t) for t in prompt]
    new: list[int] = []
    eos = set(eos_ids)
    while True:
        token = choose(logits, seen, p, rng)
        new.append(token)
        seen.append(token)
        if token in eos or len(new) >= p.max_new_tokens:
            break
        if any(len(new) >= len(s) and tuple(new[-len(s) :]) == s for s in p.stop_ids):
            break
        position = np.asarray([[len(seen) - 1]], dtype=np.int64)
        logits, past = decoder.forward(np.asarray([[token]], dtype=np.int64), position, past)
    return new


def generate(
    decoder: Decoder,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    p: GenerationParams,
    eos_ids: Sequence[int],
    max_length: int | None = None,
) -> dict[str, np.ndarray]:
    """Generate for every row of a request (left- or right-padded prompts; the mask says which
    tokens are real); returns {"generated_ids": int64 [rows, longest], padded with -1}.
    `max_length`: the model's most positions, which prompt + max_new_tokens must fit in."""
    rng = np.random.default_rng(p.seed)
    rows = []
    for ids, mask in zip(input_ids, attention_mask, strict=True):
        prompt = ids[mask.astype(bool)]
        if prompt.size == 0:
            raise InvalidInput("a prompt has no tokens (attention_mask is all zeros)")
        if max_length is not None and prompt.size + p.max_new_tokens > max_length:
            raise InvalidInput(
                f"a prompt of {prompt.size} tokens with max_new_tokens={p.max_new_tokens} exceeds the model's "
                f"maximum of {max_length} tokens"
            )
        rows.append(generate_row(decoder, prompt, p, eos_ids, rng))
    out = np.full((len(rows), max(len(r) for r in rows)), PAD, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return {OUTPUT: out}
