"""Texts -> token arrays, as a fast tokenizer's `__call__` answers them (padded to the request's
longest row, as NumPy arrays), through the `tokenizers` library directly where that answer is the
same.

transformers' `__call__` wraps the Rust tokenizer's `encode_batch` in Python that costs more than
the tokenization itself for a short text (argument checks, strategy objects, setting truncation and
padding on the shared backend, `BatchEncoding`, list-to-array conversions). `FastEncoder` calls
`encode_batch` itself, with truncation and padding set as transformers sets them, on copies of the
backend tokenizer (one per concurrent caller: setting truncation on a tokenizer another thread is
encoding with is not safe). `text_encoder` chooses, once when a stage loads: the fast path for a
tokenizer whose class leaves transformers' fast `__call__` as it is and whose answers on probe
texts are the same both ways; transformers' own call otherwise (`TransformersEncoder`). Both take
the same arguments and answer with the same arrays and the same `encodings`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# transformers' "no maximum" model_max_length (`tokenization_utils_base.LARGE_INTEGER`): with it,
# truncation=True truncates nothing.
LARGE_INTEGER = int(1e20)

# The methods of transformers' fast tokenizers whose code the fast path repeats: a class that
# overrides one of them may answer differently, so it keeps transformers' call.
_CALL_PATH = (
    "__call__",
    "_get_padding_truncation_strategies",
    "_encode_plus",
    "_convert_encoding",
    "set_truncation_and_padding",
    "_switch_to_input_mode",
)

# What the load-time check encodes both ways: empty, unicode, accents, CJK, emoji, special tokens'
# text, long runs (truncated), and pairs.
PROBES = (
    "",
    "Angela Merkel visited Paris.",
    "  Élodie Núñez (Zürich) — 東京タワー 😀❤️ naïve café\tend\n",
    "[CLS] <s> </s> [SEP] <mask> [MASK] <pad>",
    " ".join(["antidisestablishmentarianism"] * 40),
)


class TokenBatch(dict):  # type: ignore[type-arg]
    """A tokenizer call's arrays by name (int64) and the call's `tokenizers.Encoding`s, one per row."""

    def __init__(self, arrays: dict[str, np.ndarray], encodings: list[Any]):
        super().__init__(arrays)
        self.encodings = encodings


class TransformersEncoder:
    """transformers' own `__call__`: for tokenizers the fast path does not cover."""

    fast = False

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(
        self,
        texts: list[str],
        pairs: list[str] | None = None,
        *,
        truncation: bool,
        max_length: int | None,
        stride: int = 0,
        overflow: bool = False,
        offsets: bool = False,
        strategy: str = "longest_first",
    ) -> Any:
        """The texts (and pairs) padded to the longest row; truncated to `max_length` when
        `truncation`, by `strategy` (transformers': longest_first, only_first, only_second);
        `overflow`: every window of `stride` overlapping tokens as a row of its own, and
        `overflow_to_sample_mapping`; `offsets`: the offset mapping and special-tokens mask."""
        return self.tokenizer(
            texts,
            pairs,
            padding=True,
            truncation=strategy if truncation else False,
            max_length=max_length if truncation else None,
            stride=stride,
            return_overflowing_tokens=overflow,
            return_offsets_mapping=offsets,
            return_special_tokens_mask=offsets,
            return_tensors="np",
            verbose=False,  # no warning for a row longer than the model takes: the task checks lengths
        )


class FastEncoder:
    """The same answers as `TransformersEncoder`, from the backend tokenizer's `encode_batch`."""

    fast = True

    def __init__(self, tokenizer: Any):
        self._json = tokenizer.backend_tokenizer.to_str()
        self._split_special = bool(tokenizer.split_special_tokens)
        self._types = "token_type_ids" in tokenizer.model_input_names
        self._attention = "attention_mask" in tokenizer.model_input_names
        self._model_max_length = int(tokenizer.model_max_length)
        self._truncation_side = tokenizer.truncation_side
        self._padding = {
            "direction": tokenizer.padding_side,
            "pad_id": tokenizer.pad_token_id,
            "pad_type_id": tokenizer.pad_token_type_id,
            "pad_token": tokenizer.pad_token,
        }
        self._idle: list[Any] = [self._copy()]  # backend copies no call is using

    def _copy(self) -> Any:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(self._json)
        backend.encode_special_tokens = self._split_special
        backend.enable_padding(length=None, pad_to_multiple_of=None, **self._padding)
        return backend

    def __call__(
        self,
        texts: list[str],
        pairs: list[str] | None = None,
        *,
        truncation: bool,
        max_length: int | None,
        stride: int = 0,
        overflow: bool = False,
        offsets: bool = False,
        strategy: str = "longest_first",
    ) -> TokenBatch:
        if truncation and max_length is None and self._model_max_length <= LARGE_INTEGER:
            max_length = self._model_max_length
        truncate = {
            "max_length": max_length,
            "stride": stride,
            "strategy": strategy,
            "direction": self._truncation_side,
        }
        try:
            backend = self._idle.pop()  # atomic: no two calls share a copy
        except IndexError:
            backend = self._copy()
        try:
            if not truncation or max_length is None:
                if backend.truncation is not None:
                    backend.no_truncation()
            elif backend.truncation != truncate:
                backend.enable_truncation(**truncate)
            encodings = backend.encode_batch(texts if pairs is None else list(zip(texts, pairs, strict=True)))
        finally:
            self._idle.append(backend)
        rows = [e for enc in encodings for e in (enc, *enc.overflowing)] if overflow else encodings
        # Padded: every row has the longest row's length (rows of no tokens at all make [rows, 0]
        # offsets, as transformers' arrays are then).
        arrays = {"input_ids": np.array([e.ids for e in rows], dtype=np.int64)}
        if self._types:
            arrays["token_type_ids"] = np.array([e.type_ids for e in rows], dtype=np.int64)
        if self._attention:
            arrays["attention_mask"] = np.array([e.attention_mask for e in rows], dtype=np.int64)
        if offsets:
            arrays["special_tokens_mask"] = np.array([e.special_tokens_mask for e in rows], dtype=np.int64)
            arrays["offset_mapping"] = np.array([e.offsets for e in rows], dtype=np.int64)
        if overflow:
            counts = [1 + len(enc.overflowing) for enc in encodings]
            arrays["overflow_to_sample_mapping"] = np.repeat(np.arange(len(encodings), dtype=np.int64), counts)
        return TokenBatch(arrays, rows)


def text_encoder(tokenizer: Any) -> FastEncoder | TransformersEncoder | None:
    """The encoder for this tokenizer (None: none, an audio bundle's), chosen once: `FastEncoder`
    where its answers are transformers' (`fast_path_refusal` says why not, where they may not be)."""
    if tokenizer is None:
        return None
    slow = TransformersEncoder(tokenizer)
    refusal = fast_path_refusal(tokenizer)
    if refusal is None:
        try:
            fast = FastEncoder(tokenizer)
        except Exception as exc:  # noqa: BLE001 - a backend that cannot be copied (custom Python components)
            refusal = f"its backend cannot be copied ({type(exc).__name__})"
        else:
            if same_answers(fast, slow):
                log.debug("tokenizing through the tokenizers library directly")
                return fast
            refusal = "its answers to the probe texts differ from transformers'"
    log.debug("tokenizing through transformers' call: %s", refusal)
    return slow


def fast_path_refusal(tokenizer: Any) -> str | None:
    """Why the fast path may answer differently for this tokenizer, or None: it answers the same."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    if not isinstance(tokenizer, TokenizersBackend):
        return f"{type(tokenizer).__name__} is not a fast tokenizer"
    changed = [m for m in _CALL_PATH if getattr(type(tokenizer), m, None) is not getattr(TokenizersBackend, m, None)]
    if changed:
        return f"{type(tokenizer).__name__} overrides {', '.join(changed)}"
    if tokenizer.pad_token is None or tokenizer.pad_token_id is None or tokenizer.pad_token_id < 0:
        return "it has no padding token (transformers refuses to pad)"
    return None


def same_answers(fast: FastEncoder, slow: TransformersEncoder) -> bool:
    """Both encoders answer the probe texts alike (or refuse them alike): alone and as pairs,
    truncated (with overflowing windows, and only the first text of a pair) and not."""
    texts = list(PROBES)
    hypotheses = ["This example is about politics."] * len(texts)
    calls: list[tuple[list[str] | None, dict[str, Any]]] = [
        (None, {"truncation": False, "max_length": None, "offsets": True}),
        (texts[::-1], {"truncation": False, "max_length": None, "offsets": True}),
        (None, {"truncation": True, "max_length": 16, "offsets": True}),
        (texts[::-1], {"truncation": True, "max_length": 16, "offsets": True}),
        (None, {"truncation": True, "max_length": 16, "stride": 4, "overflow": True, "offsets": True}),
        (hypotheses, {"truncation": True, "max_length": 24, "strategy": "only_first"}),
    ]
    for pairs, options in calls:
        answers = []
        for encoder in (fast, slow):
            try:
                answers.append(encoder(texts, pairs, **options))
            except Exception as exc:  # noqa: BLE001 - tokenizers raises bare Exceptions
                answers.append(type(exc))
        if isinstance(answers[0], type) or isinstance(answers[1], type):
            if answers[0] is not answers[1]:
                return False
        elif not same_batch(answers[0], answers[1]):
            return False
    return True


def same_batch(a: Any, b: Any) -> bool:
    """The same arrays (names, shapes, values) and the same overflow per row."""
    if sorted(a) != sorted(b):
        return False
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.shape != y.shape or not np.array_equal(x, y):
            return False
    return [len(e.overflowing) for e in a.encodings] == [len(e.overflowing) for e in b.encodings]
