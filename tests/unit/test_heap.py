"""What a process holds once loaded stays out of the collector's full passes (`splitserve.core.heap`),
and ONNX Runtime's worker threads spin as asked (`model_svc.backends.onnx.session_options`)."""

from __future__ import annotations

import gc
import weakref

from model_svc.backends import Spin
from model_svc.backends.onnx import session_options
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
        assert frozen() is None  # ...until the next settle (after an unload) collects it
    finally:
        gc.unfreeze()


def test_workers_spin_as_asked() -> None:
    def entries(spin: Spin) -> tuple[str, str]:
        options = session_options(2, spin)
        keys = ("session.intra_op.allow_spinning", "session.force_spinning_stop")
        return tuple(options.get_session_config_entry(k) for k in keys)  # type: ignore[return-value]

    assert entries("never") == ("0", "0")
    assert entries("within-runs") == ("1", "1")
    assert entries("always") == ("1", "0")
