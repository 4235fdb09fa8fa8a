"""The bundle's tokenizer on its own, for TEI's `/tokenize` and `/decode` (the gateway's
`Tokenize` and `Decode`, run by the preprocess tier, which holds the tokenizer).

`tokenize`: each text's tokens as TEI answers them, `{id, text, special, start, stop}`: a token's
text is the input's characters [start, stop) (character offsets, where TEI's count UTF-8 bytes: the
same for ASCII); a special token has its own text and no offsets. Never truncated, and without
the bundle's prompt template: the text's own tokens. `decode`: token ids back to text. Pure
Python: no protobuf.
"""

from __future__ import annotations

from typing import Any

from splitserve.core.errors import InvalidInput


def _tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None:
        raise InvalidInput("this model has no tokenizer (its inputs are audio)")
    return tokenizer


def tokenize(tokenizer: Any, texts: list[str], add_special_tokens: bool) -> list[list[dict[str, Any]]]:
    tokenizer = _tokenizer(tokenizer)
    if not texts:
        raise InvalidInput("field 'inputs' is empty: send a text or a list of texts")
    enc = tokenizer(
        texts,
        add_special_tokens=add_special_tokens,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        truncation=False,
        verbose=False,  # no warning for a text longer than the model takes: it is only tokenized
    )
    out = []
    for i, text in enumerate(texts):
        ids, offsets, special = enc["input_ids"][i], enc["offset_mapping"][i], enc["special_tokens_mask"][i]
        names = tokenizer.convert_ids_to_tokens(ids)
        tokens = []
        for token_id, (start, stop), is_special, name in zip(ids, offsets, special, names, strict=True):
            if is_special:
                tokens.append({"id": token_id, "text": name, "special": True, "start": None, "stop": None})
            else:
                tokens.append(
                    {"id": token_id, "text": text[start:stop], "special": False, "start": start, "stop": stop}
                )
        out.append(tokens)
    return out


def decode(tokenizer: Any, ids: list[list[int]], skip_special_tokens: bool) -> list[str]:
    tokenizer = _tokenizer(tokenizer)
    if not ids:
        raise InvalidInput("field 'ids' is empty: send a list of token ids or a list of such lists")
    vocab = len(tokenizer)
    for i, row in enumerate(ids):
        bad = next((t for t in row if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidInput(f"ids {i}: token id {bad} is outside the vocabulary [0, {vocab})")
    return [str(t) for t in tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)]
