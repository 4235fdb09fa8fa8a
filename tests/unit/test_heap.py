"""What a process holds once loaded stays out of the collector's full passes (`splitserve.core.heap`)."""

from __future__ import annotations

import gc
import weakref

from splitserve.core import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_settle_freezes_what_is_alive_and_frees_what_is_not() -> None:
    gc.unfreeze()
    kept, dropped = Node(), Node()
    gone = weakref.ref(dropped)
    del dropped
    try:
        heap.settle()
        assert gone() is None  # garbage at the time is collected, not frozen
        assert gc.get_freeze_count() > 0
        frozen = weakref.ref(kept)
        del kept
        gc.collect()
        assert frozen() is not None  # a frozen cycle is out of every pass...
        heap.settle()
        assert frozen() is not None  # ...and of the next load's settle...
        heap.settle(unloaded=True)
        assert frozen() is None  # ...until an unload's settle collects it
    finally:
        gc.unfreeze()
