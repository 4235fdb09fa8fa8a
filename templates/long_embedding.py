"""Long documents, one vector each: a text longer than the model's window is split into
overlapping chunks (by tokens), every chunk is embedded (mean-pooled, normalized), and the
document's vector is the normalized mean of its chunks' vectors.

Params: `window` (tokens per chunk; 0: the model's maximum less its two special tokens) and
`overlap` (tokens two neighbouring chunks share).
"""

import math

PARAMS = {"window": 0, "overlap": 32}
DEFAULTS = {"pooling": "mean", "normalize": True}
EXAMPLES = [{"id": "short", "text": "Florida has nice beaches"}, {"id": "long", "text": "The quick brown fox. " * 200}]

tokenizer = None
max_length = 512


def load(context):
    global tokenizer, max_length
    tokenizer, max_length = context.tokenizer, context.max_length


def chunks(text, window, overlap):
    """Character spans of overlapping token windows of `text` (the whole text when it fits)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= window:
        return [text]
    spans, step = [], window - overlap
    for start in range(0, len(offsets), step):
        piece = offsets[start : start + window]
        spans.append(text[piece[0][0] : piece[-1][1]])
        if start + window >= len(offsets):
            break
    return spans


def preprocess(records, params):
    window = params["window"] or max_length - 2
    if not 0 <= params["overlap"] < window:
        raise ValueError(f"param 'overlap': {params['overlap']} must be at least 0 and less than window {window}")
    out = []
    for record in records:
        text = record.get("text", record.get("content"))
        if not isinstance(text, str):
            raise ValueError(f"record {record['id']!r}: no text to embed")
        out += [{"id": record["id"], "text": chunk} for chunk in chunks(text, window, params["overlap"])]
    return out


def postprocess(records, results, params):
    vectors = {}
    for result in results:
        vectors.setdefault(result["id"], []).append(result["embedding"])
    rows = []
    for record in records:
        mine = vectors[record["id"]]
        mean = [sum(column) / len(mine) for column in zip(*mine, strict=True)]
        norm = math.sqrt(sum(v * v for v in mean)) or 1.0
        rows.append({"id": record["id"], "embedding": [v / norm for v in mean], "chunks": len(mine)})
    return rows
