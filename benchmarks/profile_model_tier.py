"""Where a model-tier replica's CPU goes: one `splitserve serve-model` process under closed-loop
load of pre-tokenized requests (as `splitserve bench`'s model-tier targets send them), its CPU
per record split by thread (the event loop's main thread, the batcher's worker thread that runs
ONNX Runtime, ONNX Runtime's own intra-op threads, gRPC core's threads), and the padding
fraction of what it ran. This is how the issue's profile was taken ("~9.0 of 9.5 ms CPU per
record inside ONNX Runtime's threads, ~0.5 ms on the event loop, 21% padding").

    HF_HUB_OFFLINE=1 python benchmarks/profile_model_tier.py [--bundle URI] [--threads 1]
        [--concurrency 16] [--batch 8] [--seconds 10] [--pooling mean]

Without --bundle it logs the bundled all-MiniLM-L6-v2 to the current MLflow store and exports
it (fp32; `--int8` for the quantized bundle). Prints a table; `--json PATH` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

CLOCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Per thread of `pid`: (its name, CPU-seconds so far), from /proc."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / CLOCK)  # utime + stime
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="Serving bundle URI (default: export the bundled MiniLM).")
    p.add_argument("--int8", action="store_true", help="Export the int8 bundle (without --bundle).")
    p.add_argument("--threads", type=int, default=1, help="The replica's --intra-op-threads.")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--batch", type=int, default=8, help="Records per request.")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--pooling", choices=("none", "mean", "cls"), default="mean", help="As the gateway asks.")
    p.add_argument("--json", help="Write the figures here too.")
    args = p.parse_args(argv)

    from splitserve.bench.corpus import docstring_corpus
    from splitserve.bench.load import run_point
    from splitserve.bench.targets import ModelTierTarget

    bundle = args.bundle
    if bundle is None:
        from splitserve.bench.plan import INT8_GATES
        from splitserve.commands.log import DEFAULT_TASK, log_pipeline
        from splitserve.export import export_bundle

        source = log_pipeline(None, DEFAULT_TASK, None)
        int8 = {"quantize": "int8", "quality_thresholds": INT8_GATES["fast"]} if args.int8 else {}
        bundle = export_bundle(source, show_progress=False, **int8)  # the bench's int8 (its gate)
    target = ModelTierTarget("model-tier", bundle, "onnx", threads=args.threads, pooling=args.pooling)
    target.start()
    try:
        corpus = docstring_corpus()
        for _ in range(3):  # warm-up
            target.call(corpus[:8])
        pid = target.replica.proc.pid  # type: ignore[union-attr]
        before, tokens_before = thread_cpu(pid), target.tokens()
        wall = time.perf_counter()
        point = run_point(target, corpus, args.concurrency, args.batch, args.seconds, min_requests=10)
        wall = time.perf_counter() - wall
        after, tokens_after = thread_cpu(pid), target.tokens()
    finally:
        target.stop()

    records = max(point.records, 1)
    rows = []
    for tid, (name, cpu) in after.items():
        spent = cpu - before.get(tid, (name, 0.0))[1]
        if spent > 0:
            role = "event loop (main thread)" if tid == pid else name
            rows.append((role, tid, spent * 1000 / records))
    rows.sort(key=lambda r: -r[2])
    real = tokens_after["real"] - tokens_before["real"]
    pad = tokens_after["padding"] - tokens_before["padding"]
    total = sum(r[2] for r in rows)
    print(f"bundle {bundle}; {args.threads} intra-op thread(s); {args.concurrency} x {args.batch}; {wall:.1f} s")
    print(f"{point.throughput_rps:.1f} records/s, p50 {point.p50_ms:.1f} ms, {point.errors} errors")
    print(f"padding: {pad / max(real + pad, 1):.1%} of {int(real + pad)} token positions")
    print(f"CPU per record: {total:.2f} ms")
    for role, tid, ms in rows[:12]:
        print(f"  {ms:7.3f} ms  {ms / total:6.1%}  {role} (tid {tid})")
    if args.json:
        figures: dict[str, Any] = {
            "bundle": bundle,
            "threads": args.threads,
            "concurrency": args.concurrency,
            "batch": args.batch,
            "records_per_s": point.throughput_rps,
            "p50_ms": point.p50_ms,
            "padding_fraction": round(pad / max(real + pad, 1), 4),
            "cpu_ms_per_record": round(total, 3),
            "threads_cpu_ms_per_record": [{"thread": r[0], "tid": r[1], "ms": round(r[2], 3)} for r in rows],
        }
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
