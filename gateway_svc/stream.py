"""Streaming text: the token ids the model tier streams, gathered per record, and the text deltas
sent to the client (only ever appended). Stdlib only: the gateway imports no numpy."""

from __future__ import annotations

import array
import sys
import unicodedata
from typing import Any

from protos import splitserve_pb2 as pb


def ids_of(raw: bytes) -> list[int]:
    """INT64 little-endian tensor bytes -> ints (stdlib only: the gateway imports no numpy)."""
    ids = array.array("q")
    ids.frombytes(raw)
    if sys.byteorder == "big":
        ids.byteswap()
    return ids.tolist()


def texts_of(post: pb.PostprocessResponse) -> list[str]:
    return [r.generated.texts[0].generated_text if r.generated.texts else "" for r in post.results]


def _is_wide(char: str) -> bool:
    """CJK and other scripts written without spaces: a word ends with each character."""
    return unicodedata.east_asian_width(char) in ("W", "F")


class TextStream:
    """The tokens generated so far for each record of a streamed request, and the text already
    sent. A delta only ever appends: text is held back from the last whitespace on (decoding more
    tokens can still change an unfinished word, or clean up the space before punctuation) and
    while it ends in an incomplete UTF-8 sequence (U+FFFD), as transformers' TextStreamer does."""

    def __init__(self, rows: int):
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.sent_tokens = [0] * rows
        self.sent_text = [""] * rows

    def add(self, row: int, tokens: list[int]) -> None:
        self.tokens[row].extend(tokens)

    def tensor(self) -> pb.Tensor:
        """The tokens so far as the model tier's `generated_ids`: INT64 [rows, longest], -1 padded."""
        width = max(1, *(len(t) for t in self.tokens))
        ids = array.array("q")
        for tokens in self.tokens:
            ids.extend(tokens)
            ids.extend([-1] * (width - len(tokens)))
        if sys.byteorder == "big":
            ids.byteswap()
        return pb.Tensor(name="generated_ids", datatype="INT64", shape=[len(self.tokens), width], raw=ids.tobytes())

    def deltas(self, texts: list[str], records: Any, done: bool) -> list[pb.TextDelta]:
        out = []
        for row, text in enumerate(texts):
            if not done:
                text = text.rstrip("\ufffd")
                if text and not _is_wide(text[-1]):
                    cut = max((i for i, c in enumerate(text) if c.isspace()), default=0)
                    text = text[:cut]
            sent = self.sent_text[row]
            new_tokens = self.tokens[row][self.sent_tokens[row] :]
            if not text.startswith(sent) or (len(text) == len(sent) and not (done and new_tokens)):
                continue  # nothing to add yet (or a revision, which the final response carries)
            out.append(
                pb.TextDelta(record=row, id=records[row].id or str(row), text=text[len(sent) :], token_ids=new_tokens)
            )
            self.sent_text[row], self.sent_tokens[row] = text, len(self.tokens[row])
        return out
