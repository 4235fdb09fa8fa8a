"""Where one record's time goes under `splitserve up`, step by step: every tier traced with
OpenTelemetry's console exporter (`OTEL_TRACES_EXPORTER=console`), single-record requests one at a
time through the gateway, the spans joined by trace id, the gaps between them as medians. Tracing
itself adds a little to each step; the sum is the gateway's span.

    HF_HUB_OFFLINE=1 python benchmarks/trace_steps.py --bundle URI [--requests 100] [--up-arg=--inline-stages]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

STEPS = [  # (span, start or end), in the order one request meets them; a step absent inline is skipped
    ("Predict", 0, "gateway receives"),
    ("Preprocess", 0, "preprocess starts"),
    ("Preprocess", 1, "preprocess ends"),
    ("ModelInfer", 0, "model tier starts"),
    ("queue", 1, "inference starts"),
    ("inference", 1, "inference ends"),
    ("ModelInfer", 1, "model tier answers"),
    ("Postprocess", 0, "postprocess starts"),
    ("Postprocess", 1, "postprocess ends"),
    ("Predict", 1, "gateway answers"),
]


def spans(text: str) -> list[dict]:
    """The JSON spans in the tiers' interleaved output (a span cut by another process's line is skipped)."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while (start := text.find('{\n    "name"', at)) >= 0:
        try:
            span, at = decoder.raw_decode(text, start)
            out.append(span)
        except json.JSONDecodeError:
            at = start + 1
    return out


def ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e3


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, help="Serving bundle URI.")
    p.add_argument("--requests", type=int, default=100, help="Measured, after 10 of warm-up.")
    p.add_argument("--up-arg", action="append", default=[], help="More `splitserve up` arguments.")
    args = p.parse_args(argv)

    from splitserve.bench.corpus import docstring_corpus
    from splitserve.client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = Path(tempfile.mkdtemp(prefix="trace-steps-")) / "up.log"
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console"}
    command = [sys.executable, "-m", "splitserve", "up", args.bundle, "--port", str(port), *args.up_arg]
    with open(log, "w") as out:
        up = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    texts = docstring_corpus()
    try:
        with Client(f"127.0.0.1:{port}", timeout_s=30) as client:
            for _ in range(120):  # until the gateway answers
                try:
                    client.predict(texts[:1])
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.5)
            for i in range(10 + args.requests):
                client.predict([texts[i % len(texts)]])
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    by_trace: dict[str, dict[str, tuple[float, float]]] = collections.defaultdict(dict)
    for span in spans(log.read_text()):
        try:
            name = span["name"].rsplit("/", 1)[-1]
            by_trace[span["context"]["trace_id"]][name] = (ms(span["start_time"]), ms(span["end_time"]))
        except (KeyError, ValueError):
            continue
    # Every span the path has (inline: no Preprocess/Postprocess); a trace with one cut is left out.
    seen = collections.Counter(name for t in by_trace.values() for name in t)
    needed = {name for name, _, _ in STEPS if seen[name] >= seen["Predict"] / 2}
    traces = sorted((t for t in by_trace.values() if needed <= t.keys()), key=lambda t: t["Predict"][0])
    traces = traces[-args.requests :]
    gaps: dict[str, list[float]] = collections.defaultdict(list)
    for trace in traces:
        points = [(what, trace[name][edge]) for name, edge, what in STEPS if name in trace]
        for (a, t0), (b, t1) in zip(points, points[1:], strict=False):
            gaps[f"{a} -> {b}"].append(t1 - t0)
    print(
        f"{len(traces)} requests, one record each, concurrency 1; `splitserve up {args.bundle} {' '.join(args.up_arg)}`"
    )
    print("| step | p50 ms |\n|---|---|")
    for step, values in gaps.items():
        print(f"| {step} | {statistics.median(values):.2f} |")
    print(f"| the gateway's span | {statistics.median(t['Predict'][1] - t['Predict'][0] for t in traces):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
