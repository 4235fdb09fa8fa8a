"""Logs every garbage collection of 3 ms or more in each Python process that starts with this folder
on PYTHONPATH (a `gc.callbacks` hook), and at exit writes them to $GC_PAUSES_DIR/<pid>.json with the
process's command line and how many objects it tracked (frozen ones included). See README.md."""

import atexit
import gc
import json
import os
import sys
import time

_started: list[float] = [0.0]
_pauses: list[list[float]] = []


def _hook(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _started[0]) * 1e3
    if ms >= 3:
        _pauses.append([time.time(), info["generation"], round(ms, 1)])


def _write() -> None:
    folder = os.environ.get("GC_PAUSES_DIR")
    if folder:
        record = {"argv": sys.argv[:3], "tracked": len(gc.get_objects()) + gc.get_freeze_count(), "pauses": _pauses}
        with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as f:
            json.dump(record, f)


gc.callbacks.append(_hook)
atexit.register(_write)
