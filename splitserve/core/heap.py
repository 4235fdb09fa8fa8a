"""The heap a process holds once it has loaded, kept out of the garbage collector's full passes.

A full collection walks every object the process tracks: ~170,000 once a tier has imported its
libraries and loaded a bundle (90 ms of one core here for `gc.collect()`; AMD EPYC, Python 3.11).
Python runs one whenever enough objects have outlived the young generations, so under load it
lands in the middle of requests: at 10x overload the gateway paused 44 and 66 ms in full passes,
and every request on its loop waited behind them (the refusals' p99 went from ~11 to 30-40 ms).
`gc.freeze()` moves what is alive now into a generation no collection walks, so a full pass walks
only what came after. `settle` does that once a load (or an unload) is done; frozen objects are
still freed when nothing refers to them, and what an unload left in cycles goes at the next
`settle`.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect what is garbage now, then freeze the rest (call when a load or unload is done)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
