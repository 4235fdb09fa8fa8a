"""Giving memory back to the system after large batches (glibc only; elsewhere a no-op).

ONNX Runtime's arena is shrunk after every run (`backends.onnx`), but what it frees goes back to
glibc's heaps, which keep it: freed blocks below the (self-raising) mmap threshold stay in the
process. Large blocks are kept out of the heaps, and the heaps are trimmed after a large batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20  # blocks from 1 MiB up are mapped and unmapped, never kept in a heap
TRIM_AFTER_TOKENS = 2048  # batches of this many tokens or more are followed by a trim


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def map_large_blocks() -> None:
    """Fix glibc's mmap threshold (it otherwise rises to the largest block freed, up to 32 MiB)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def trim() -> None:
    """Return the heaps' free pages to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
