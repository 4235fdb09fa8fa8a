"""token-classification (NER): logits -> entities, a numpy port of the HF pipeline's postprocessing.

This module reproduces, exactly, what
``transformers.TokenClassificationPipeline.postprocess`` (transformers 4.57) returns for a
single, non-chunked record: softmax over the logits, ``gather_pre_entities``,
``aggregate`` / ``aggregate_word(s)``, ``group_entities`` / ``group_sub_entities`` /
``get_tag`` and the ``ignore_labels`` filter, for every aggregation strategy
(``none``, ``simple``, ``first``, ``average``, ``max``).

It deliberately imports neither ``torch``, ``onnxruntime`` nor ``transformers.pipelines``
(importing the latter pulls in torch): the postprocessing service runs without torch.
The tokenizer is received as an argument (normally a ``PreTrainedTokenizerFast``) and only
its ``convert_ids_to_tokens`` / ``convert_tokens_to_string`` / ``unk_token_id`` / ``is_fast``
and backend ``model.continuing_subword_prefix`` are used, exactly as the pipeline does.

Pipeline quirks reproduced on purpose (do not "fix" them, results must match):

* ``is_subword``: for tokenizers whose backend model has a truthy
  ``continuing_subword_prefix`` (WordPiece ``##``, some BPEs) a token is a subword when
  ``len(token) != len(text[start:end])``; otherwise (byte-level BPE, Unigram, ...) the
  whitespace heuristic ``start > 0 and " " not in text[start - 1:start + 1]`` is used
  (and the pipeline's ``UserWarning`` is emitted for first/average/max).
* Unknown tokens take the original text slice as ``word`` and are never subwords.
* For first/average/max, each word's text is ``convert_tokens_to_string`` of its tokens,
  and the grouped entity's text is ``convert_tokens_to_string`` applied *again* to those
  word strings.
* ``entity_group`` is ``label.split("-", 1)[-1]`` of the group's first entity, while
  grouping itself uses ``get_tag`` (``B-``/``I-`` prefixes only, other labels count as ``I``).
* ``ignore_labels`` is compared to ``entity`` (strategy none) or to ``entity_group`` (the
  stripped tag), so with aggregation ``ignore_labels=["B-PER"]`` filters nothing.
* Softmax is ``exp(x - max) / sum`` in the logits' dtype (float16/bfloat16 logits are
  upcast to float32 first, like the pipeline does).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

AGGREGATION_STRATEGIES: tuple[str, ...] = ("none", "simple", "first", "average", "max")
_WORD_STRATEGIES = frozenset({"first", "average", "max"})

_SLOW_TOKENIZER_MSG = (
    "Slow tokenizers cannot handle subwords. Please set the `aggregation_strategy` option"
    ' to `"simple"` or use a fast tokenizer.'
)


def _check_strategy(aggregation_strategy: str) -> str:
    if aggregation_strategy in AGGREGATION_STRATEGIES:
        return aggregation_strategy
    raise ValueError(
        f"Invalid aggregation_strategy {aggregation_strategy!r}; "
        f"expected one of {', '.join(repr(s) for s in AGGREGATION_STRATEGIES)}."
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    maxes = np.max(logits, axis=-1, keepdims=True)
    shifted_exp = np.exp(logits - maxes)
    return shifted_exp / shifted_exp.sum(axis=-1, keepdims=True)


def _has_continuing_subword_prefix(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return False
    return bool(getattr(backend.model, "continuing_subword_prefix", None))


def _gather_pre_entities(
    sentence: str,
    input_ids: np.ndarray,
    scores: np.ndarray,
    offsets: np.ndarray | None,
    special_tokens_mask: np.ndarray,
    strategy: str,
    tokenizer: Any,
) -> list[dict]:
    keep = [idx for idx in range(len(scores)) if not special_tokens_mask[idx]]
    if not keep:
        return []
    ids = [int(input_ids[idx]) for idx in keep]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    word_aware = _has_continuing_subword_prefix(tokenizer) if offsets is not None else False
    unk_id = tokenizer.unk_token_id

    pre_entities = []
    for idx, token_id, word in zip(keep, ids, tokens, strict=True):
        if offsets is not None:
            start_ind = int(offsets[idx][0])
            end_ind = int(offsets[idx][1])
            word_ref = sentence[start_ind:end_ind]
            if word_aware:
                # BPE/WordPiece with a continuing-subword prefix: fuse tokens properly.
                is_subword = len(word) != len(word_ref)
            else:
                if strategy in _WORD_STRATEGIES:
                    warnings.warn(
                        "Tokenizer does not support real words, using fallback heuristic",
                        UserWarning,
                        stacklevel=3,
                    )
                is_subword = start_ind > 0 and " " not in sentence[start_ind - 1 : start_ind + 1]
            if token_id == unk_id:
                word = word_ref
                is_subword = False
        else:
            start_ind = None
            end_ind = None
            is_subword = False
        pre_entities.append(
            {
                "word": word,
                "scores": scores[idx],
                "start": start_ind,
                "end": end_ind,
                "index": idx,
                "is_subword": is_subword,
            }
        )
    return pre_entities


def _aggregate_word(entities: list[dict], strategy: str, tokenizer: Any, id2label: dict) -> dict:
    word = tokenizer.convert_tokens_to_string([entity["word"] for entity in entities])
    if strategy == "first":
        scores = entities[0]["scores"]
        idx = scores.argmax()
        score = scores[idx]
        entity = id2label[int(idx)]
    elif strategy == "max":
        max_entity = max(entities, key=lambda entity: entity["scores"].max())
        scores = max_entity["scores"]
        idx = scores.argmax()
        score = scores[idx]
        entity = id2label[int(idx)]
    elif strategy == "average":
        stacked = np.stack([entity["scores"] for entity in entities])
        average_scores = np.nanmean(stacked, axis=0)
        entity_idx = average_scores.argmax()
        entity = id2label[int(entity_idx)]
        score = average_scores[entity_idx]
    else:  # pragma: no cover - guarded by the caller
        raise ValueError("Invalid aggregation_strategy")
    return {
        "entity": entity,
        "score": score,
        "word": word,
        "start": entities[0]["start"],
        "end": entities[-1]["end"],
    }


def _aggregate_words(entities: list[dict], strategy: str, tokenizer: Any, id2label: dict) -> list[dict]:
    word_entities = []
    word_group: list[dict] | None = None
    for entity in entities:
        if word_group is None:
            word_group = [entity]
        elif entity["is_subword"]:
            word_group.append(entity)
        else:
            word_entities.append(_aggregate_word(word_group, strategy, tokenizer, id2label))
            word_group = [entity]
    if word_group is not None:
        word_entities.append(_aggregate_word(word_group, strategy, tokenizer, id2label))
    return word_entities


def _nanmean(values: list[Any]) -> Any:
    """`np.nanmean(values)` (the same number, in the same dtype) without its overhead where no value
    is NaN: the sum (the same reduction) over the count, divided as nanmean divides (float32 sum over
    an intp count, in float64, cast back)."""
    array = np.asarray(values)
    if array.dtype.kind == "f":
        total = np.add.reduce(array)  # what `array.sum()` runs
        if not np.isnan(total):  # NaN: a NaN score (or inf - inf), which nanmean treats its own way
            return total.dtype.type(total / np.intp(array.size))
    return np.nanmean(array)


def _group_sub_entities(entities: list[dict], tokenizer: Any) -> dict:
    entity = entities[0]["entity"].split("-", 1)[-1]
    scores = _nanmean([entity["score"] for entity in entities])
    tokens = [entity["word"] for entity in entities]
    return {
        "entity_group": entity,
        "score": scores,  # the pipeline's np.mean of this one number: the number itself
        "word": tokenizer.convert_tokens_to_string(tokens),
        "start": entities[0]["start"],
        "end": entities[-1]["end"],
    }


def _get_tag(entity_name: str) -> tuple[str, str]:
    if entity_name.startswith("B-"):
        return "B", entity_name[2:]
    if entity_name.startswith("I-"):
        return "I", entity_name[2:]
    # Not in B-/I- format: default to I- for continuation.
    return "I", entity_name


def _group_entities(entities: list[dict], tokenizer: Any) -> list[dict]:
    entity_groups = []
    entity_group_disagg: list[dict] = []
    for entity in entities:
        if not entity_group_disagg:
            entity_group_disagg.append(entity)
            continue
        bi, tag = _get_tag(entity["entity"])
        _last_bi, last_tag = _get_tag(entity_group_disagg[-1]["entity"])
        if tag == last_tag and bi != "B":
            entity_group_disagg.append(entity)
        else:
            entity_groups.append(_group_sub_entities(entity_group_disagg, tokenizer))
            entity_group_disagg = [entity]
    if entity_group_disagg:
        entity_groups.append(_group_sub_entities(entity_group_disagg, tokenizer))
    return entity_groups


def _aggregate(pre_entities: list[dict], strategy: str, tokenizer: Any, id2label: dict) -> list[dict]:
    if strategy in ("none", "simple"):
        entities = []
        for pre_entity in pre_entities:
            entity_idx = pre_entity["scores"].argmax()
            entities.append(
                {
                    "entity": id2label[int(entity_idx)],
                    "score": pre_entity["scores"][entity_idx],
                    "index": pre_entity["index"],
                    "word": pre_entity["word"],
                    "start": pre_entity["start"],
                    "end": pre_entity["end"],
                }
            )
    else:
        entities = _aggregate_words(pre_entities, strategy, tokenizer, id2label)
    if strategy == "none":
        return entities
    return _group_entities(entities, tokenizer)


def _to_python(entity: dict) -> dict:
    out = {}
    for key, value in entity.items():
        if key == "score":
            value = float(value)
        elif key in ("index", "start", "end") and value is not None:
            value = int(value)
        out[key] = value
    return out


def decode_entities(
    logits: np.ndarray,
    input_ids: np.ndarray,
    offsets: np.ndarray,
    special_tokens_mask: np.ndarray,
    text: str,
    tokenizer,
    id2label: dict[int, str],
    aggregation_strategy: str = "none",
    ignore_labels: list[str] | None = None,
) -> list[dict]:
    """Decode one record's token-classification logits into entities.

    Returns exactly what ``pipeline("token-classification", aggregation_strategy=...)(text)``
    returns for ``text`` (single chunk, no ``stride``):

    * strategy ``"none"``: ``[{"entity", "score", "index", "word", "start", "end"}, ...]``
    * other strategies: ``[{"entity_group", "score", "word", "start", "end"}, ...]``

    ``score`` is a Python float; ``index``/``start``/``end`` are Python ints
    (``start``/``end`` are ``None`` when ``offsets`` is ``None``, as the pipeline gives for
    slow tokenizers).

    Args:
        logits: ``[T, num_labels]`` logits of one record, padding removed.
        input_ids: ``[T]`` token ids.
        offsets: ``[T, 2]`` character offsets (the tokenizer's ``offset_mapping``), or ``None``.
        special_tokens_mask: ``[T]``, non-zero for special tokens (they are skipped).
        text: the original sentence the offsets refer to.
        tokenizer: the tokenizer that produced ``input_ids`` (a ``PreTrainedTokenizerFast``).
        id2label: label id -> label name (the model config's ``id2label``).
        aggregation_strategy: ``none``, ``simple``, ``first``, ``average`` or ``max``.
        ignore_labels: labels to drop, default ``["O"]``.

    Raises:
        ValueError: unknown strategy; ``first``/``average``/``max`` with a slow tokenizer;
            inconsistent array shapes.
    """
    strategy = _check_strategy(aggregation_strategy)
    if strategy in _WORD_STRATEGIES and not getattr(tokenizer, "is_fast", False):
        raise ValueError(_SLOW_TOKENIZER_MSG)
    if ignore_labels is None:
        ignore_labels = ["O"]

    logits = np.asarray(logits)
    if logits.ndim == 3 and logits.shape[0] == 1:
        logits = logits[0]
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [T, num_labels], got {logits.shape}")
    # The pipeline upcasts half-precision logits to float32 and keeps float32/float64 as is.
    if logits.dtype not in (np.float32, np.float64):
        logits = logits.astype(np.float32)
    logits = np.ascontiguousarray(logits)

    input_ids = np.asarray(input_ids).reshape(-1)
    special_tokens_mask = np.asarray(special_tokens_mask).reshape(-1)
    num_tokens = logits.shape[0]
    if input_ids.shape[0] != num_tokens or special_tokens_mask.shape[0] != num_tokens:
        raise ValueError(
            f"length mismatch: logits has {num_tokens} tokens, input_ids {input_ids.shape[0]}, "
            f"special_tokens_mask {special_tokens_mask.shape[0]}"
        )
    if offsets is not None:
        offsets = np.asarray(offsets).reshape(-1, 2)
        if offsets.shape[0] != num_tokens:
            raise ValueError(f"length mismatch: logits has {num_tokens} tokens, offsets {offsets.shape[0]}")

    labels = {int(k): v for k, v in id2label.items()}
    if len(labels) < logits.shape[1]:
        missing = sorted(set(range(logits.shape[1])) - set(labels))
        raise ValueError(f"id2label has no name for label ids {missing}")

    scores = _softmax(logits)
    pre_entities = _gather_pre_entities(text, input_ids, scores, offsets, special_tokens_mask, strategy, tokenizer)
    grouped = _aggregate(pre_entities, strategy, tokenizer, labels)
    return [
        _to_python(entity)
        for entity in grouped
        if entity.get("entity", None) not in ignore_labels and entity.get("entity_group", None) not in ignore_labels
    ]
