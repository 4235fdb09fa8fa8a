"""`splitserve bench`: its flags (the targets and both profiles in `--help`) and the command."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    from splitserve.bench import plan

    default, full = plan.DEFAULT, plan.FULL
    p = sub.add_parser(
        "bench",
        help="Benchmark ONNX fp32/int8 and PyTorch tiers against in-process and mlflow serve (default: a few minutes).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "The same requests against several ways of serving one model. By default "
            f"{', '.join(default.targets)}, at concurrency {' '.join(map(str, default.concurrency))} and batch sizes "
            f"{' '.join(map(str, default.batch_sizes))}, {default.repeats} run of {default.seconds:g}s per point on "
            "the docstrings set "
            f"(about {plan.clock(plan.profile_s(default))} on 2 cores, logging and exporting included); --full: every "
            f"target, the fixed-length set and the roofline too, as the committed figures were made (about "
            f"{plan.clock(plan.profile_s(full))}). "
            "Progress and time left on stderr; Ctrl-C stops it and writes what was measured.",
            100,
            break_on_hyphens=False,
        )
        + "\n\ntargets:\n"
        + "\n".join(f"  {name:<26} {what}" for name, what in plan.TARGETS.items()),
    )
    p.add_argument("--source-uri", help="Source model URI (default: log the bundled all-MiniLM-L6-v2).")
    p.add_argument("--out", default="benchmarks/latest", help="Folder for results.md, results.json and plots.")
    p.add_argument(
        "--full",
        action="store_true",
        help=f"Every target, {full.repeats} runs of {full.seconds:g}s per point: the committed figures' run.",
    )
    p.add_argument("--targets", nargs="+", metavar="TARGET", help="Only these targets (listed above).")
    p.add_argument("--concurrency", type=int, nargs="+", help="Requests in flight (default: 1 16).")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="Records per request (default: 1 8).")
    p.add_argument(
        "--seconds",
        type=float,
        help=f"Duration of each run of a point (default: {default.seconds:g}; --full {full.seconds:g}).",
    )
    p.add_argument(
        "--repeats",
        type=int,
        help=f"Runs of each point, the figures their medians (default: {default.repeats}; --full {full.repeats}).",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="Where the model tier runs.")
    p.add_argument(
        "--int8-gate",
        choices=tuple(plan.INT8_GATES),
        default="fast",
        help="The int8 bundle's quality gate: fast (0.85 top-1, 0.9 lowest cosine: MiniLM's fastest int8) or "
        "default (the export's own, 0.97 top-1: MiniLM's blockwise int8).",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitserve.bench import plan

    profile = plan.FULL if args.full else plan.DEFAULT
    try:
        targets = plan.check_targets(args.targets) if args.targets else profile.targets
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    from splitserve.bench import run_bench
    from splitserve.mlflow_env import ensure_tracking_uri

    ensure_tracking_uri()
    command = "splitserve " + " ".join(sys.argv[1:]) if sys.argv else "splitserve bench"
    try:
        report = run_bench(
            args.source_uri,
            Path(args.out),
            tuple(args.concurrency or profile.concurrency),
            tuple(args.batch_sizes or profile.batch_sizes),
            args.seconds if args.seconds is not None else profile.seconds,
            targets,
            command=command,
            device=args.device,
            repeats=args.repeats if args.repeats is not None else profile.repeats,
            request_sets=profile.request_sets,
            roofline=profile.roofline,
            int8_gate=args.int8_gate,
        )
    except KeyboardInterrupt:  # before the first target (logging, exporting): nothing measured
        print(f"interrupted before any point was measured; nothing written to {args.out}", file=sys.stderr)
        return 130
    return 130 if report["interrupted"] else 0
