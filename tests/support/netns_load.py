"""Load for tests/tiers/test_netns.py, run inside the client's network namespace:
`python tests/support/netns_load.py TARGET SECONDS CONCURRENCY`.

First every text once, one at a time (the answers to hold the others to), then prints
`{"phase": "warm"}`; then closed-loop requests of two records each for SECONDS, each answer
checked against the warm-up's (ids in order, vectors within 1e-4); then prints one JSON line:
requests, lost (failed with any status), wrong (answered, but not as in the warm-up), the
failures' codes and the slowest request."""

from __future__ import annotations

import json
import sys

import checked_load  # the sibling module: this file runs as a script

TEXTS = checked_load.texts(64)


def main(target: str, seconds: float, concurrency: int) -> None:
    report = checked_load.run(target, seconds, concurrency, TEXTS)
    print(json.dumps({k: report[k] for k in ("requests", "lost", "wrong", "codes", "slowest_s")}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
