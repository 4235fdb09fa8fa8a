"""fill-mask: logits at the mask positions -> top-k tokens, as transformers' pipeline decodes them."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from postprocess_svc.decoders.classification import softmax
from splitserve.errors import InvalidInput

log = logging.getLogger("splitserve.fill_mask")


def target_ids(tokenizer: Any, targets: list[str]) -> np.ndarray:
    """The pipeline's `get_target_ids`: each target's id in the vocabulary, else the first token
    it tokenizes to (with a warning); duplicates dropped, in the pipeline's (set) order."""
    vocab = tokenizer.get_vocab()
    ids = []
    for target in targets:
        id_ = vocab.get(target)
        if id_ is None:
            input_ids = tokenizer(
                target,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                max_length=1,
                truncation=True,
            )["input_ids"]
            if len(input_ids) == 0:
                log.warning("target %r is not in the vocabulary and tokenizes to nothing; ignoring it", target)
                continue
            id_ = input_ids[0]
            log.warning("target %r is not in the vocabulary; using %r", target, tokenizer.convert_ids_to_tokens(id_))
        ids.append(id_)
    unique = list(set(ids))
    if not unique:
        raise InvalidInput(f"param 'targets': none of {targets} is a token of the model's vocabulary")
    return np.array(unique)


def decode_masks(
    logits: np.ndarray, input_ids: np.ndarray, tokenizer: Any, top_k: int, targets: np.ndarray | None = None
) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    """One record's [tokens, vocab] logits and [tokens] ids (padding removed) -> the pipeline's
    output: [{score, token, token_str, sequence}] for one mask, a list of such lists for several
    (then each sequence keeps the special tokens and the other masks, as the pipeline's does)."""
    if targets is not None and targets.shape[0] < top_k:
        top_k = targets.shape[0]
    masked_index = np.nonzero(input_ids == tokenizer.mask_token_id)[0]
    probs = softmax(logits[masked_index].astype(np.float32))
    if targets is not None:
        probs = probs[..., targets]
    top_k = min(top_k, probs.shape[-1])
    predictions = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
    values = np.take_along_axis(probs, predictions, axis=-1)
    single_mask = len(masked_index) == 1
    result = []
    for i, (row_values, row_predictions) in enumerate(zip(values.tolist(), predictions.tolist(), strict=True)):
        row = []
        for score, p in zip(row_values, row_predictions, strict=True):
            token = int(targets[p]) if targets is not None else int(p)
            tokens = input_ids.copy()
            tokens[masked_index[i]] = token
            tokens = tokens[np.where(tokens != tokenizer.pad_token_id)]
            sequence = tokenizer.decode(tokens, skip_special_tokens=single_mask)
            row.append({"score": score, "token": token, "token_str": tokenizer.decode([token]), "sequence": sequence})
        result.append(row)
    return result[0] if single_mask else result
