"""Latency when idle, throughput when busy (issue 25, idle25): the model tier's thread plan
(`model_svc.threads`) against the one it replaced, side by side in one run.

"before": every batch on `--intra-op-threads` threads, one batch at a time per replica
(`--idle-threads 1 --parallel-batches 1`, as the model tier ran until now); "after": the defaults
(a batch that runs alone on every core, one thread per batch and several at once under load).
Measured per configuration: one record per request at concurrency 1 (p50), records/s at 16 x 8,
and the model replicas' resident memory once loaded and after the load. Both through the model
tier alone (`ModelInfer` with pre-tokenized inputs, one `serve-model` replica) and through
`splitserve up` (every tier, its defaults: one model replica per core, one intra-op thread each).
First, the two ONNX Runtime sessions alone in this process, one record per call, calls
alternating between them (`--sessions-only`: just that). Configurations run in turns (before, after, before, after, ...) so that a busy machine weighs on
both alike; the figures are the medians over the rounds.

    HF_HUB_OFFLINE=1 python benchmarks/idle_threads.py [--bundle URI] [--rounds 2] [--seconds 8]
        [--json benchmarks/idle-threads-2cpu/results.json]

Without --bundle it logs the bundled all-MiniLM-L6-v2 to the current MLflow store and exports it
(fp32). The settings are handed to the replicas as environment variables (SPLITSERVE_MODEL_*),
which `up` passes on to its children.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BEFORE = {"SPLITSERVE_MODEL_IDLE_THREADS": "1", "SPLITSERVE_MODEL_PARALLEL_BATCHES": "1"}


def rss_mb(pids: list[int]) -> float:
    import psutil

    return sum(psutil.Process(p).memory_info().rss for p in pids) / 2**20


def measure(target: Any, corpus: list[str], seconds: float) -> dict[str, float]:
    from splitserve.bench.load import run_point

    target.start()
    try:
        for _ in range(5):  # warm-up
            target.call(corpus[:1])
            target.call(corpus[:8])
        pids = target.processes()["model"]
        loaded = rss_mb(pids)
        lone = run_point(target, corpus, 1, 1, seconds, min_requests=50)
        busy = run_point(target, corpus, 16, 8, seconds, min_requests=32)
        return {
            "p50_ms_1x1": round(lone.p50_ms, 2),
            "records_per_s_16x8": round(busy.throughput_rps, 1),
            "p50_ms_16x8": round(busy.p50_ms, 1),
            "errors": lone.errors + busy.errors,
            "model_rss_mb_loaded": round(loaded, 1),
            "model_rss_mb_after_load": round(rss_mb(pids), 1),
            "model_replicas": len(pids),
        }
    finally:
        target.stop()


def sessions_side_by_side(bundle_uri: str, corpus: list[str], requests: int) -> dict[str, float]:
    """The two sessions alone, in this process, one record per call, calls alternating between
    them (so that a busy machine weighs on both alike): ms per call, p50."""
    from model_svc.backends.onnx import OnnxBackend
    from model_svc.threads import usable_cores
    from splitserve.core.bundle import load_bundle
    from splitserve.core.records import Limits, to_records
    from splitserve.core.tokenizer import load_tokenizer
    from splitserve.stages.preprocess import Preprocessor

    bundle = load_bundle(bundle_uri, ("tokenizer", "onnx"))
    backend = OnnxBackend(bundle.onnx_path, bundle.config, intra_op_threads=1, idle_threads=usable_cores())
    preprocessor = Preprocessor(bundle.config, load_tokenizer(bundle.tokenizer_dir), Limits(10**6, 10**9))
    inputs = [preprocessor.run(to_records([text]), None).model_inputs for text in corpus[:requests]]
    times: dict[str, list[float]] = {"one thread": [], f"{backend.idle_threads} threads (alone)": []}
    for i, feed in enumerate(inputs * 2):
        for name, infer in zip(times, (backend.infer, backend.infer_alone), strict=True):
            start = time.perf_counter()
            infer(feed)
            if i >= len(inputs):  # the first pass warms up
                times[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(t) * 1000, 2) for name, t in times.items()}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="Serving bundle URI (default: export the bundled MiniLM).")
    p.add_argument("--rounds", type=int, default=2, help="Turns of every configuration.")
    p.add_argument("--seconds", type=float, default=8.0, help="Per load point.")
    p.add_argument("--json", help="Write the figures here too.")
    p.add_argument("--sessions-only", action="store_true", help="Only the two sessions side by side, in process.")
    args = p.parse_args(argv)

    from splitserve.bench.corpus import docstring_corpus
    from splitserve.bench.run import bundle_or_minilm
    from splitserve.bench.targets import GatewayTarget, ModelTierTarget
    from splitserve.core import cpu

    bundle = bundle_or_minilm(args.bundle)
    corpus = docstring_corpus()
    configs = {
        "model tier, 1 thread (before)": (lambda: ModelTierTarget("model", bundle, "onnx", threads=1), BEFORE),
        "model tier, 2 threads (before)": (lambda: ModelTierTarget("model", bundle, "onnx", threads=2), BEFORE),
        "model tier, plan (after)": (lambda: ModelTierTarget("model", bundle, "onnx", threads=1), {}),
        "up (before)": (lambda: GatewayTarget("up", bundle, "onnx"), BEFORE),
        "up (after)": (lambda: GatewayTarget("up", bundle, "onnx"), {}),
    }
    started, load = time.time(), os.getloadavg()
    sessions = sessions_side_by_side(bundle, corpus, 300)
    print(f"in-process, one record per call, alternating, p50 ms: {sessions}", flush=True)
    if args.sessions_only:
        if args.json:
            figures = {"cpu": cpu.describe(), "load_average_at_start": load, "p50_ms": sessions}
            Path(args.json).write_text(json.dumps(figures, indent=2))
        return 0
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    for round_ in range(args.rounds):
        for name, (make, env) in configs.items():
            saved = {k: os.environ.get(k) for k in BEFORE}
            os.environ.update(env)
            try:
                runs[name].append(measure(make(), corpus, args.seconds))
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            print(f"round {round_ + 1} {name}: {runs[name][-1]}", flush=True)
    results = {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} | {"rounds": rs}
        for name, rs in runs.items()
    }
    print(f"\n{os.cpu_count()} CPUs ({cpu.describe()}); medians of {args.rounds} rounds, {args.seconds:g} s per point")
    print(f"{'configuration':34} {'p50 1x1 ms':>10} {'rec/s 16x8':>10} {'RSS MB':>14}")
    for name, r in results.items():
        rss = f"{r['model_rss_mb_loaded']:.0f}/{r['model_rss_mb_after_load']:.0f}"
        print(f"{name:34} {r['p50_ms_1x1']:>10.2f} {r['records_per_s_16x8']:>10.1f} {rss:>14}")
    if args.json:
        figures = {
            "bundle": bundle,
            "cpus": os.cpu_count(),
            "cpu": cpu.describe(),
            "load_average_at_start": load,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "rounds": args.rounds,
            "seconds_per_point": args.seconds,
            "sessions_in_process_p50_ms": sessions,
            "results": results,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
