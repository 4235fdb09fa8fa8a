"""The heap a process holds once it has loaded, kept out of the garbage collector's full passes.

A full collection walks every object the process tracks: 50,000-93,000 once a tier has loaded
MiniLM's bundle, 49-153 ms of one core for the first full pass at start-up here
(`benchmarks/overload-2cpu/gc/summary.txt`). Python runs one whenever enough objects have outlived
the young generations, so under load it lands in the middle of requests: at 10x overload the
gateway ran two of 46-63 ms inside the overload windows of each sitting, and every request on its
event loop waited behind them. `gc.freeze()` moves what is alive now into a generation no
collection walks, so later passes walk only what came after (none of 3 ms or more inside the
windows since). Frozen objects are still freed when nothing refers to them; only cycles among them
wait for `settle(unloaded=True)`.
"""

from __future__ import annotations

import gc


def settle(unloaded: bool = False) -> None:
    """Freeze what is alive now, once a load is done (collecting what is not frozen first: the load's
    own garbage). `unloaded`: a version was let go, so walk the frozen heap too, once, to free its
    cycles (a full pass: tens of milliseconds, once per unload)."""
    if unloaded:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    # The collector runs a full pass once the objects promoted since the last one reach a quarter
    # of those it kept then; it kept the whole heap just now, and froze it: count from zero again.
    gc.collect()
