"""The bench's request sets: real English sentences of mixed length (the docstrings of Python's
standard library), and the same cut to a fixed length."""

from __future__ import annotations

import inspect
import re

import numpy as np

CORPUS_MODULES = (
    "json", "os", "re", "collections", "itertools", "functools", "pathlib", "argparse", "logging",
    "subprocess", "asyncio", "threading", "datetime", "decimal", "fractions", "statistics", "csv",
    "email", "http.client", "urllib.parse", "textwrap", "string", "heapq", "bisect", "shutil",
)  # fmt: skip


def docstring_corpus(limit: int = 512) -> list[str]:
    """Real English sentences of mixed length: the docstrings of Python's standard library."""
    import importlib

    seen: set[str] = set()
    sentences: list[str] = []
    for name in CORPUS_MODULES:
        module = importlib.import_module(name)
        objects = [module, *(getattr(module, a) for a in sorted(dir(module)) if not a.startswith("_"))]
        for obj in objects:
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join((doc or "").split())):
                words = sentence.split()
                if 4 <= len(words) <= 80 and sentence not in seen and not sentence.startswith(">>>"):
                    seen.add(sentence)
                    sentences.append(sentence)
    rng = np.random.default_rng(0)
    rng.shuffle(sentences)
    return sentences[:limit]


def fixed_length_set(corpus: list[str], words: int = 24, limit: int = 256) -> list[str]:
    """Sentences cut to exactly `words` words: a request set without length variance."""
    long = [s for s in corpus if len(s.split()) >= words] or corpus
    return [" ".join((s.split() * words)[:words]) for s in (long * (limit // len(long) + 1))[:limit]]
