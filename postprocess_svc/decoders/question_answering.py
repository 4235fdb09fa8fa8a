"""question-answering: start/end logits of the context windows -> answers with character spans.

A numpy port of transformers' `QuestionAnsweringPipeline.postprocess` and its helpers
`select_starts_ends` and `decode_spans` (same operations in the same order, so that the same
spans win, ties and quirks included): every window scores its best spans, answers with the same
text (case-insensitive) add up their scores across windows, the best `top_k` are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Window:
    """One model row (a window of the context), real tokens only."""

    start: np.ndarray  # [tokens] start logits
    end: np.ndarray  # [tokens] end logits
    p_mask: np.ndarray  # [tokens] 1 where a token cannot be part of an answer
    attention_mask: np.ndarray  # [tokens]
    offsets: np.ndarray  # [tokens, 2] characters of each token in the context
    word_chars: np.ndarray  # [tokens, 2] characters of each token's word, -1 where there is none


def decode_spans(
    start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int, undesired_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Span scores start[s] * end[e] for s <= e < s + max_answer_len; the best `topk` spans of
    wanted tokens. `undesired_tokens` is [1, tokens], 1 for tokens that may be in an answer
    (despite its name, as in the pipeline)."""
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = np.array([np.argmax(scores_flat)])
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    # As the pipeline: `nonzero()` of the 2-D mask also yields its row indices (all 0), so token 0
    # always counts as wanted.
    wanted = undesired_tokens.nonzero()
    desired_spans = np.isin(starts, wanted) & np.isin(ends, wanted)
    starts = starts[desired_spans]
    ends = ends[desired_spans]
    scores = candidates[0, starts, ends]
    return starts, ends, scores


def select_starts_ends(
    start: np.ndarray,
    end: np.ndarray,
    p_mask: np.ndarray,
    attention_mask: np.ndarray | None,
    min_null_score: float = 1000000,
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    max_answer_len: int = 15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Softmax of the start and end logits over the wanted tokens, then `decode_spans`. Arrays are
    [1, tokens]. Returns the spans and the lowest null (CLS) score seen so far."""
    undesired_tokens = np.abs(np.array(p_mask) - 1)
    if attention_mask is not None:
        undesired_tokens = undesired_tokens & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0
    start = np.where(undesired_tokens_mask, -10000.0, start)
    end = np.where(undesired_tokens_mask, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


def _char_span(window: Window, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    """The pipeline's `get_indices`: from the start of s's word to the end of e's word, or the
    tokens' own offsets where either has no word."""
    if align_to_words and window.word_chars[s, 0] >= 0 and window.word_chars[e, 1] >= 0:
        return int(window.word_chars[s, 0]), int(window.word_chars[e, 1])
    return int(window.offsets[s, 0]), int(window.offsets[e, 1])


def decode_answers(
    windows: list[Window],
    context: str,
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    max_answer_len: int = 15,
    align_to_words: bool = True,
) -> list[dict[str, Any]]:
    """One record's windows -> [{score, start, end, answer}], best first, at most top_k."""
    min_null_score = 1000000.0  # large and positive
    answers: list[dict[str, Any]] = []
    by_text: dict[str, dict[str, Any]] = {}  # the pipeline's `get_answer`: same text, case-insensitive
    pre_topk = top_k * 2 + 10 if align_to_words else top_k  # aligning to words merges some spans
    for window in windows:
        starts, ends, scores, min_null_score = select_starts_ends(
            window.start.astype(np.float32)[None],
            window.end.astype(np.float32)[None],
            window.p_mask[None],
            window.attention_mask[None],
            min_null_score,
            pre_topk,
            handle_impossible_answer,
            max_answer_len,
        )
        for s, e, score in zip(starts, ends, scores, strict=True):
            start_index, end_index = _char_span(window, int(s), int(e), align_to_words)
            target = context[start_index:end_index]
            same = by_text.get(target.lower())
            if same:
                same["score"] += score.item()
            else:
                answer = {"score": score.item(), "start": start_index, "end": end_index, "answer": target}
                answers.append(answer)
                by_text[target.lower()] = answer
    if handle_impossible_answer:
        answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    return sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
