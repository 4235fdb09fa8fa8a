"""What bounds one request, checked before the work it would cost: its characters (what the
preprocess tier's tokenizer spends CPU on), its tokens (what the model tier spends CPU and memory
on) and the size of every message it makes on the way (gRPC refuses a message past
`max_message_bytes`, the one setting every hop's limit derives from).

The gateway checks characters on arrival; the preprocess tier checks all three once it has
tokenized, so that a request too large for a later hop is refused before the model runs, not
after.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from splitserve.core.bundle import ServingConfig
from splitserve.core.errors import InvalidInput
from splitserve.core.records import check_ids

# Defaults of the settings of the same names.
MAX_REQUEST_CHARS = 1_000_000  # about half a second of tokenizing on one core
MAX_REQUEST_TOKENS = 131_072  # model rows x padded length: 256 rows of 512 tokens, 1024 of 128
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# What a message carries besides its tensors' bytes and the records (names, shapes, params, ids).
MESSAGE_SLACK_BYTES = 64 * 1024

TEXT_FIELDS = ("text", "text_pair", "question", "context", "query", "table")


def request_chars(records: Any) -> int:
    """Characters of text in protobuf records (every string field and candidate label)."""
    total = 0
    for record in records:
        total += sum(len(getattr(record, name)) for name in TEXT_FIELDS)
        total += sum(len(label) for label in record.candidate_labels)
    return total


def check_request_chars(records: Any, limit: int) -> int:
    """The request's characters of text, refused past `limit` (and every record id past MAX_ID_CHARS)."""
    check_ids(records)
    chars = request_chars(records)
    if chars > limit:
        raise InvalidInput(
            f"request has {chars} characters of text; the limit is {limit} (max_request_chars): send fewer or "
            "shorter records per request"
        )
    return chars


def check_request_tokens(model_inputs: dict[str, np.ndarray], limit: int) -> None:
    """Rows x padded length of the model inputs the request encoded to."""
    rows, width = next(iter(model_inputs.values())).shape[:2]
    if rows * width > limit:
        raise InvalidInput(
            f"request encodes to {rows} rows of {width} tokens ({rows * width}); the limit is {limit} tokens "
            "(max_request_tokens): send fewer or shorter records per request"
        )


def output_bytes(
    output_shapes: dict[str, list[int]], rows: int, width: int, new_tokens: int | None = None, pooled: bool = False
) -> int:
    """Bytes of the model outputs for `rows` x `width` inputs: output dims of -1 are the rows
    (dim 0) and the tokens (dim 1: the input width, or `new_tokens` for generation); float32 or int64.
    `pooled`: the model tier answers one float32 vector per row instead (`splitserve.core.pooling`)."""
    if pooled:
        return rows * next(iter(output_shapes.values()))[-1] * 4
    total = 0
    for shape in output_shapes.values():
        dims = [rows if i == 0 else (new_tokens or width) if d == -1 else d for i, d in enumerate(shape)]
        total += int(np.prod(dims, dtype=np.int64)) * (8 if new_tokens else 4)
    return total


def model_output_bytes(
    config: ServingConfig, model_inputs: dict[str, np.ndarray], new_tokens: int | None = None, pooled: bool = False
) -> int:
    """Bytes of the model's outputs for these inputs: token rows give an output per token, audio
    rows one per frame of the feature encoder's convolutions (CTC) or none (a classifier's dims)."""
    ids = model_inputs.get("input_ids")
    if ids is not None:
        rows, width = ids.shape[:2]
    else:
        first = next(iter(model_inputs.values()))
        rows, width = first.shape[0], first.shape[-1] // math.prod(s for _, s in config.conv_layers) + 1
    if pooled:
        return rows * max(config.pooled_width, 1) * 4
    return output_bytes(config.output_shapes, rows, width, new_tokens, pooled)


def check_message(what: str, size: int, limit: int) -> None:
    if size + MESSAGE_SLACK_BYTES > limit:
        raise InvalidInput(
            f"request too large: {what} would be {size / 2**20:.1f} MiB; the limit is {limit / 2**20:.1f} MiB "
            "(max_message_bytes): send fewer records per request"
        )
