"""Where each hop's CPU goes: `splitserve up` on a bundle (default: the bundled all-MiniLM-L6-v2,
fp32), driven one record per request at concurrency 1, as the single-record targets of issue 25
count it. Prints the p50 through the gateway beside the bundle's in-process pyfunc p50, the CPU per
request of every process (gateway, preprocess, model, postprocess; from /proc, so every thread of
each, gRPC core's included), and each process's top Python functions by own CPU samples (py-spy,
attached to each process while a second batch of requests runs; idle waits are not sampled).

    HF_HUB_OFFLINE=1 python benchmarks/profile_hops.py [--bundle URI] [--inline-stages]
        [--tier-transport unix|tcp] [--requests 300] [--profile-s 15] [--top 12] [--json PATH]

Without --bundle it logs the bundled all-MiniLM-L6-v2 to the current MLflow store and exports it.
py-spy (the dev extra) must be on PATH or beside this Python; `--no-profile` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

PARAMS = {"pooling": "mean", "normalize": True}


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("error: py-spy not found: pip install py-spy (the dev extra), or pass --no-profile")
    return found


def tier_processes(up_pid: int) -> dict[str, list[Any]]:
    """`up`'s children by tier: name -> its replicas' psutil.Process."""
    import psutil

    found: dict[str, list[Any]] = {}
    for child in psutil.Process(up_pid).children(recursive=True):
        match = re.search(r"splitserve serve-(\w+)", " ".join(child.cmdline()))
        if match:
            found.setdefault(match.group(1), []).append(child)
    return found


def cpu_s(processes: dict[str, list[Any]]) -> dict[str, float]:
    """CPU-seconds so far (user + system, every thread) of each tier's replicas together."""
    return {name: sum(sum(p.cpu_times()[:2]) for p in replicas) for name, replicas in processes.items()}


def drive(client: Any, texts: list[str], n: int) -> list[float]:
    """`n` single-record requests one after the other; their latencies in seconds."""
    latencies = []
    for i in range(n):
        t = time.perf_counter()
        client.predict([texts[i % len(texts)]], params=PARAMS)
        latencies.append(time.perf_counter() - t)
    return latencies


# Leaves that are waits in epoll, which py-spy counts as active on some kernels (this VM's): the
# event loop's selector, and gRPC core's poller thread (C code under a bare Thread.run).
WAITS = {"EpollSelector.select (selectors.py)": "event loop epoll", "Thread.run (threading.py)": "gRPC poller"}
LINE = re.compile(r":\d+\)$")
# Frames on every stack (runpy, the CLI, asyncio's loop, threading) say nothing about where time goes.
TRUNK = re.compile(r"<frozen |asyncio/|threading\.py|splitserve/(__main__|cli)\.py|commands/serve\.py")


def top_functions(raws: list[Path], top: int) -> dict[str, Any]:
    """From py-spy raw profiles (a tier's replicas): the functions with the most samples of their
    own ("own": the leaf frame) and those most often on the stack ("inclusive": the leaf or any
    caller, the trunk left out), as shares of the samples not in an epoll wait (`waits`: those
    shares of all samples)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    waits: Counter[str] = Counter()
    for line in [line for raw in raws if raw.exists() for line in raw.read_text().splitlines()]:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [LINE.sub(")", f) for f in stack.split(";")]  # one entry per function, whatever its line
        if frames[-1] in WAITS:
            waits[WAITS[frames[-1]]] += int(count)
            continue
        own[frames[-1]] += int(count)
        for frame in set(frames):
            if not TRUNK.search(frame):
                inclusive[frame] += int(count)
    busy = sum(own.values()) or 1
    every = busy + sum(waits.values())
    return {
        "samples": every,
        "waits": {name: round(100 * n / every, 1) for name, n in waits.items()},
        "own": [(f, round(100 * n / busy, 1)) for f, n in own.most_common(top)],
        "inclusive": [(f, round(100 * n / busy, 1)) for f, n in inclusive.most_common(top)],
    }


def profile(processes: dict[str, list[Any]], seconds: float, out: Path, rate: int) -> list[subprocess.Popen[bytes]]:
    """Start a py-spy recorder on each replica for `seconds` (its samples in OUT/<tier>-<pid>.txt)."""
    spy = py_spy()
    return [
        subprocess.Popen(
            [spy, "record", "-p", str(p.pid), "-d", str(int(seconds)), "-r", str(rate), "--nonblocking"]
            + ["--format", "raw", "-o", str(out / f"{name}-{p.pid}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, replicas in processes.items()
        for p in replicas
    ]


def baseline_p50(bundle: str, texts: list[str], n: int) -> float:
    """The bundle's pyfunc in this process, one record per call: p50 seconds."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(bundle)
    for text in texts[:20]:
        model.predict([text], params=PARAMS)
    latencies = []
    for i in range(n):
        t = time.perf_counter()
        model.predict([texts[i % len(texts)]], params=PARAMS)
        latencies.append(time.perf_counter() - t)
    return statistics.median(latencies)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="Serving bundle URI (default: export the bundled MiniLM).")
    p.add_argument("--inline-stages", action="store_true", help="`up --inline-stages`: one hop instead of three.")
    p.add_argument("--tier-transport", choices=("unix", "tcp"), help="`up --tier-transport` (default: up's).")
    p.add_argument("--requests", type=int, default=300, help="Requests measured (after 50 of warm-up).")
    p.add_argument("--profile-s", type=float, default=20.0, help="Seconds of py-spy sampling, under the same load.")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second.")
    p.add_argument("--top", type=int, default=12, help="Functions listed per process.")
    p.add_argument("--no-profile", action="store_true", help="Latency and CPU only, no py-spy.")
    p.add_argument("--no-baseline", action="store_true", help="Skip the in-process pyfunc p50.")
    p.add_argument("--json", help="Write the figures here too.")
    args = p.parse_args(argv)

    from splitserve.bench.corpus import docstring_corpus
    from splitserve.client import Client

    bundle = args.bundle
    if bundle is None:
        from splitserve.commands.log import DEFAULT_TASK, log_pipeline
        from splitserve.export import export_bundle

        bundle = export_bundle(log_pipeline(None, DEFAULT_TASK, None), show_progress=False)
    texts = [t for t in docstring_corpus() if len(t) < 200]

    argv_up = [sys.executable, "-m", "splitserve", "up", bundle, "--no-rest"]
    argv_up += ["--inline-stages"] if args.inline_stages else []
    argv_up += ["--tier-transport", args.tier_transport] if args.tier_transport else []
    up = subprocess.Popen(argv_up, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    report: dict[str, Any] = {"bundle": bundle, "inline_stages": args.inline_stages, "requests": args.requests}
    try:
        line = up.stdout.readline() if up.stdout else ""
        if not line:
            raise SystemExit("error: `splitserve up` exited before it was ready")
        addresses = json.loads(line)
        report["addresses"] = addresses
        processes = tier_processes(up.pid)
        with Client(addresses["gateway"], timeout_s=30) as client:
            drive(client, texts, 50)  # warm-up
            before = cpu_s(processes)
            latencies = drive(client, texts, args.requests)
            after = cpu_s(processes)
            report["p50_ms"] = round(1000 * statistics.median(latencies), 2)
            report["p90_ms"] = round(1000 * statistics.quantiles(latencies, n=10)[-1], 2)
            report["cpu_ms_per_request"] = {
                name: round(1000 * (after[name] - before[name]) / args.requests, 3) for name in processes
            }
            if not args.no_profile:
                out = Path(tempfile.mkdtemp(prefix="profile-hops-"))
                spies = profile(processes, args.profile_s, out, args.rate)
                stop = threading.Event()
                timer = threading.Timer(args.profile_s + 1, stop.set)
                timer.start()
                while not stop.is_set():
                    drive(client, texts, 10)
                for spy in spies:
                    spy.wait(30)
                report["top_functions"] = {
                    name: top_functions(sorted(out.glob(f"{name}-*.txt")), args.top) for name in processes
                }
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
    if not args.no_baseline:
        report["pyfunc_p50_ms"] = round(1000 * baseline_p50(bundle, texts, args.requests), 2)

    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def render(report: dict[str, Any]) -> str:
    kind = "inline (--inline-stages)" if report["inline_stages"] else "three tiers"
    lines = [f"# {kind}: {report['requests']} single-record requests, concurrency 1 ({os.cpu_count()} CPUs)", ""]
    lines.append(f"p50 {report['p50_ms']} ms, p90 {report['p90_ms']} ms through the gateway")
    if "pyfunc_p50_ms" in report:
        added = report["p50_ms"] - report["pyfunc_p50_ms"]
        lines.append(f"in-process pyfunc p50 {report['pyfunc_p50_ms']} ms: the split adds {added:.2f} ms")
    lines += ["", "| process (its replicas together) | CPU ms per request |", "|---|---|"]
    lines += [f"| {name} | {ms} |" for name, ms in report["cpu_ms_per_request"].items()]
    for name, views in report.get("top_functions", {}).items():
        waits = ", ".join(f"{share}% {what}" for what, share in views["waits"].items())
        lines += ["", f"## {name} (py-spy, {views['samples']} samples; epoll waits left out: {waits})", ""]
        lines += ["| own % | function | inclusive % | function |", "|---|---|---|---|"]
        for (f_own, s_own), (f_inc, s_inc) in zip(views["own"], views["inclusive"], strict=False):
            lines.append(f"| {s_own} | `{f_own}` | {s_inc} | `{f_inc}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
