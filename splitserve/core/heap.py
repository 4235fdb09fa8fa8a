"""The heap a process holds once it has loaded, kept out of the garbage collector's full passes.

A full collection walks every object the process tracks: ~170,000 once a tier has imported its
libraries and loaded a bundle (`benchmarks/gc_pauses/`: the tiers' first full pass at start-up
took 30-95 ms of one core here). Python runs one whenever enough objects have outlived the young
generations, so under load it lands in the middle of requests, and every request on the event loop
waits behind it. `gc.freeze()` moves what is alive now into a generation no collection walks, so
later passes walk only what came after. Frozen objects are still freed when nothing refers to
them; only cycles among them wait for `settle(unloaded=True)`.
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
