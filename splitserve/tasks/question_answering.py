"""question-answering: question and context -> answers with character spans in the context.

encode is the pipeline's preprocess: question and context as a pair, the context cut into windows
of `max_seq_len` tokens overlapping by `doc_stride` (one model row per window). decode is a numpy
port of `QuestionAnsweringPipeline.postprocess` and its helpers `select_starts_ends` and
`decode_spans` (same operations in the same order, so that the same spans win, ties and quirks
included): every window scores its best spans, answers with the same text (case-insensitive) add
up their scores across windows, the best `top_k` are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from protos import splitserve_pb2 as pb
from splitserve.core import params as P
from splitserve.core.bundle import ServingConfig
from splitserve.core.errors import InvalidInput, record_label
from splitserve.core.records import Record
from splitserve.tasks.base import ROW_RECORD, Assets, Batch, Encoded, ExportFacts, Task


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


class QuestionAnswering(Task):
    name = "question-answering"
    # Long contexts are split into overlapping windows (max_seq_len, doc_stride) instead of
    # truncated, so the truncation/max_length params do not apply.
    params = (
        P.Param("top_k", P.positive_int, 1, "long"),
        P.Param("max_answer_len", P.positive_int, 15, "long"),
        P.Param("handle_impossible_answer", P.boolean, False, "boolean"),
        P.Param("align_to_words", P.boolean, True, "boolean"),
        P.Param("max_seq_len", P.optional_positive_int, None, "long"),  # None: min(the model's max length, 384)
        P.Param("doc_stride", P.optional_non_negative_int, None, "long"),  # None: min(max_seq_len // 2, 128)
        P.Param(
            "max_question_len", P.positive_int, 64, "long"
        ),  # accepted as the pipeline does; fast tokenizers ignore it
    )
    required = ("question", "context")
    fields = ("question", "context")
    result_kind = "answers"
    mlflow_strips = ("answer",)
    example = [{"answer": "NASA", "score": 0.87, "start": 24, "end": 28}]
    multi_row = True
    export = ExportFacts(("start_logits", "end_logits"))

    def resolve(self, config: ServingConfig, params: dict[str, Any] | None) -> dict[str, Any]:
        """The window params' defaults, as the pipeline picks them."""
        resolved = super().resolve(config, params)
        if resolved["max_seq_len"] is None:
            resolved["max_seq_len"] = min(config.max_length, 384)
        P.check_within(resolved, "max_seq_len", config.max_length)
        if resolved["doc_stride"] is None:
            resolved["doc_stride"] = min(resolved["max_seq_len"] // 2, 128)
        elif resolved["doc_stride"] > resolved["max_seq_len"]:
            raise InvalidInput(
                f"param 'doc_stride': {resolved['doc_stride']} is larger than max_seq_len ({resolved['max_seq_len']})"
            )
        return resolved

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        """Context for the postprocess assets, per row and token: `p_mask` (1: cannot be part of an
        answer), `offset_mapping` (characters of the token in the context) and `word_chars`
        (characters of the token's whole word, -1 where the pipeline falls back to the token's own)."""
        tok = assets.tokenizer
        question_first = tok.padding_side == "right"
        firsts = [(r.question if question_first else r.context) or "" for r in records]
        seconds = [(r.context if question_first else r.question) or "" for r in records]
        kwargs = dict(
            truncation="only_second" if question_first else "only_first",
            max_length=p["max_seq_len"],
            stride=p["doc_stride"],
            return_token_type_ids=True,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        try:
            enc = tok(firsts, seconds, padding=True, return_tensors="np", **kwargs)
        except Exception:  # noqa: BLE001 - the tokenizers library raises a bare Exception; find the record
            for i, record in enumerate(records):
                try:
                    tok(firsts[i], seconds[i], **kwargs)
                except Exception as exc:  # noqa: BLE001
                    raise InvalidInput(
                        f"{record_label(i, record.id)}: field 'question' leaves no room for the context in windows of "
                        f"max_seq_len={p['max_seq_len']} tokens overlapping by doc_stride={p['doc_stride']} ({exc})"
                    ) from None
            raise
        ids = enc["input_ids"].astype(np.int64)
        p_mask = np.ones_like(ids)
        word_chars = np.full((*ids.shape, 2), -1, dtype=np.int64)
        context_index = 1 if question_first else 0
        for row, encoding in enumerate(enc.encodings):
            # The pipeline's p_mask: question_first -> everything but the context; else nothing.
            p_mask[row] = [s != 1 if question_first else 0 for s in encoding.sequence_ids]
            if tok.cls_token_id is not None:
                p_mask[row][ids[row] == tok.cls_token_id] = 0
            # The pipeline's get_indices(align_to_words=True): the characters of the token's word,
            # looked up in the context sequence; any failure falls back to the token's offsets.
            spans: dict[int, Any] = {}
            for t, word in enumerate(encoding.word_ids):
                if word is None:
                    continue
                if word not in spans:
                    spans[word] = encoding.word_to_chars(word, sequence_index=context_index)
                if spans[word] is not None:
                    word_chars[row, t] = spans[word]
        context = {
            ROW_RECORD: enc["overflow_to_sample_mapping"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
            "p_mask": p_mask,
            "offset_mapping": enc["offset_mapping"].astype(np.int64),
            "word_chars": word_chars,
        }
        return Encoded(model_inputs=assets.model_inputs(enc), context=context)

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        start_name, end_name = assets.config.model_outputs[:2]
        start, end = batch.output(start_name), batch.output(end_name)
        mask, p_mask = batch.ctx("attention_mask"), batch.ctx("p_mask")
        offsets, word_chars = batch.ctx("offset_mapping"), batch.ctx("word_chars")
        results = []
        for record, rows in zip(batch.records, batch.record_rows(), strict=True):
            windows = []
            for row in rows:
                # Real tokens only (the pipeline runs each window unpadded). A batching model tier
                # may return the logits padded to a longer batch: cut them to this request's length.
                keep = mask[row].astype(bool)
                n = len(keep)
                windows.append(
                    Window(
                        start=start[row][:n][keep],
                        end=end[row][:n][keep],
                        p_mask=p_mask[row][keep],
                        attention_mask=mask[row][keep],
                        offsets=offsets[row][keep],
                        word_chars=word_chars[row][keep],
                    )
                )
            answers = decode_answers(
                windows,
                record.context or "",
                top_k=p["top_k"],
                handle_impossible_answer=p["handle_impossible_answer"],
                max_answer_len=p["max_answer_len"],
                align_to_words=p["align_to_words"],
            )
            results.append({"answers": answers})
        return results

    def to_pb(self, value: Any) -> pb.Answers:
        return pb.Answers(
            answers=[
                pb.Answer(answer=a["answer"], score=a["score"], start=int(a["start"]), end=int(a["end"])) for a in value
            ]
        )

    def from_pb(self, message: pb.Answers) -> list[dict[str, Any]]:
        return [{"answer": a.answer, "score": a.score, "start": a.start, "end": a.end} for a in message.answers]


TASK = QuestionAnswering()
