"""Garbage-collection pauses of a `benchmarks/overload.py` run (see README.md): per process, the
full passes (generation 2) at start-up and inside the overload windows, from the hook's logs and
the windows the overload JSON recorded.

    python benchmarks/gc_pauses/summary.py LOG_DIR OVERLOAD_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(log_dir: str, overload_json: str) -> None:
    windows = [(r["started_at"], r["ended_at"]) for r in json.loads(Path(overload_json).read_text())["runs"]]
    for path in sorted(Path(log_dir).glob("*.json")):
        record = json.loads(path.read_text())
        argv = record["argv"]
        name = next((a for a in argv if a.startswith("serve-") or a == "up"), "load generator")
        full = [(t, ms) for t, generation, ms in record["pauses"] if generation == 2]
        inside = [ms for t, ms in full if any(a <= t <= b for a, b in windows)]
        before = [ms for t, ms in full if t < windows[0][0]]
        print(
            f"{name:18} tracked {record['tracked']:>7}  full passes before the load: {len(before)} "
            f"(max {max(before, default=0):.0f} ms); inside the overload windows: {len(inside)} "
            f"{sorted(inside, reverse=True)} ms"
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
