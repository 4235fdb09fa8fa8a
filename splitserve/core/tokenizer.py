"""Loading the bundle's tokenizer in the CPU tiers, without torch."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any


def keep_torch_out() -> None:
    """Run this process as the CPU tiers' image runs, without torch, wherever torch is installed.

    transformers 5 imports torch whenever it is installed, at module level, in code the tiers
    reach: reading a model config (AutoTokenizer does), Whisper's feature extractor, the CTC
    tokenizer's output type (hundreds of MB and seconds at start-up). With `torch` set to None in
    `sys.modules`, transformers finds no torch (`importlib.util.find_spec` says so) and an import
    of it fails at once. Must run before transformers is first imported; the CPU tiers' entry
    points call it. It is a process-wide switch, so the in-process (pyfunc) path does not call it.
    """
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# transformers imports its classes lazily, and two threads importing at once can each see the
# other's half-initialized module ("cannot import name 'AutoTokenizer'"): the inline gateway loads
# its preprocess and postprocess stages in two threads.
_IMPORT_LOCK = threading.Lock()


def load_tokenizer(path: Path | str) -> Any:
    """The fast tokenizer saved in the bundle (None for a bundle without one: audio-classification)."""
    if not (Path(path) / "tokenizer_config.json").is_file() and (Path(path) / "preprocessor_config.json").is_file():
        return None
    with _IMPORT_LOCK:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
    # CTC's and TAPAS's have no fast one (and need no offsets)
    if not tokenizer.is_fast and getattr(tokenizer, "word_delimiter_token", None) is None and not _tapas(tokenizer):
        raise RuntimeError(f"{path}: splitserve needs a fast tokenizer (offsets), got {type(tokenizer).__name__}")
    return tokenizer


def _tapas(tokenizer: Any) -> bool:
    return type(tokenizer).__name__ == "TapasTokenizer"


def load_features(path: Path | str) -> Any:
    """The feature extractor saved in the bundle (audio tasks), or None."""
    if not (Path(path) / "preprocessor_config.json").is_file():
        return None
    with _IMPORT_LOCK:
        from transformers import AutoFeatureExtractor

        return AutoFeatureExtractor.from_pretrained(str(path))
