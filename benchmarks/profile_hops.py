"""Where each hop's CPU goes: `splitserve up` on a bundle (default: the bundled all-MiniLM-L6-v2,
fp32), driven one record per request at concurrency 1, as the single-record targets of issue 25
count it. Prints the p50 through the gateway beside the bundle's in-process pyfunc p50, the CPU per
request of every process (gateway, preprocess, model, postprocess; from /proc, so every thread of
each, gRPC core's included), and each process's top Python functions by own CPU samples (py-spy,
attached to each process while a second batch of requests runs; idle waits are not sampled).

    HF_HUB_OFFLINE=1 python benchmarks/profile_hops.py [--bundle URI] [--inline-stages]
        [--tier-transport unix|tcp] [--versus-transport tcp] [--versus-tree DIR] [--requests 300]
        [--profile-s 20] [--top 12] [--json PATH]

Side by side (`--versus-transport`, `--versus-tree DIR`: a second `up`, with the other transport
or from another source tree such as `git archive` of the commit before a change), the stacks take
turns of 10 requests, so that a shared machine's changing load falls on each alike: compare them
within one run, never across runs.

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
IDLE_S = 10.0  # seconds the stacks are left idle, to measure what they spend without requests


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
    """CPU-seconds so far of each tier's replicas together, every thread, from the scheduler's
    nanosecond counters (/proc/PID/task/TID/schedstat; /proc/PID/stat counts 10 ms ticks)."""
    out = {}
    for name, replicas in processes.items():
        total = 0
        for p in replicas:
            for task in Path(f"/proc/{p.pid}/task").iterdir():
                try:
                    total += int((task / "schedstat").read_text().split()[0])
                except (OSError, ValueError, IndexError):  # a thread that just ended
                    continue
        out[name] = total / 1e9
    return out


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


class Pyfunc:
    """The bundle's pyfunc in this process (the target's baseline), called as the gateway's client is."""

    def __init__(self, bundle: str):
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(bundle)

    def predict(self, records: list[str], params: dict[str, Any]) -> Any:
        return self.model.predict(records, params=params)


class Stack:
    """One `splitserve up` (its flags; `tree`: run another source tree's splitserve, e.g. the commit
    before a change, for a side-by-side run) and a client of its gateway."""

    def __init__(self, label: str, bundle: str, flags: list[str], tree: str | None = None):
        self.label = label
        env = {**os.environ, "PYTHONPATH": tree} if tree else None
        argv = [sys.executable, "-m", "splitserve", "up", bundle, "--no-rest", *flags]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise SystemExit(f"error: {label}: `splitserve up` exited before it was ready")
        from splitserve.client import Client

        self.addresses = json.loads(line)
        self.processes = tier_processes(self.proc.pid)
        self.client = Client(self.addresses["gateway"], timeout_s=30)
        self.latencies: list[float] = []

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(stacks: list[Stack], texts: list[str], requests: int, pyfunc: Pyfunc | None) -> dict[str, Any]:
    """Each stack `requests` single-record requests, in turns of 10 (so that a busy machine's
    changing load falls on every stack alike), the pyfunc too: p50, p90 and CPU per request of
    each process."""
    for stack in stacks:
        drive(stack.client, texts, 50)  # warm-up
    if pyfunc is not None:
        drive(pyfunc, texts, 50)
    # What the processes spend idle (the gateway's version refresh, health checks, keepalives) is
    # not the requests': its rate, measured first, is taken off the run's CPU.
    idle_start, idle_cpu = time.perf_counter(), {stack.label: cpu_s(stack.processes) for stack in stacks}
    time.sleep(IDLE_S)
    idle_s = time.perf_counter() - idle_start
    before = {stack.label: cpu_s(stack.processes) for stack in stacks}
    idle_rate = {
        label: {name: (before[label][name] - cpu) / idle_s for name, cpu in idle_cpu[label].items()} for label in before
    }
    started = time.perf_counter()
    pyfunc_latencies: list[float] = []
    for start in range(0, requests, 10):
        turn = texts[start:] + texts[:start]
        for stack in stacks:
            stack.latencies += drive(stack.client, turn, min(10, requests - start))
        if pyfunc is not None:
            pyfunc_latencies += drive(pyfunc, turn, min(10, requests - start))
    figures: dict[str, Any] = {}
    if pyfunc_latencies:
        figures["pyfunc_p50_ms"] = round(1000 * statistics.median(pyfunc_latencies), 2)
    run_s = time.perf_counter() - started
    figures["stacks"] = {}
    for stack in stacks:
        after = cpu_s(stack.processes)
        busy = {name: after[name] - before[stack.label][name] - idle_rate[stack.label][name] * run_s for name in after}
        figures["stacks"][stack.label] = {
            "idle_cpu_ms_per_s": {name: round(1000 * rate, 2) for name, rate in idle_rate[stack.label].items()},
            "p50_ms": round(1000 * statistics.median(stack.latencies), 2),
            "p90_ms": round(1000 * statistics.quantiles(stack.latencies, n=10)[-1], 2),
            "cpu_ms_per_request": {name: round(1000 * cpu / requests, 3) for name, cpu in busy.items()},
        }
    return figures


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="Serving bundle URI (default: export the bundled MiniLM).")
    p.add_argument("--inline-stages", action="store_true", help="`up --inline-stages`: one hop instead of three.")
    p.add_argument("--tier-transport", choices=("unix", "tcp"), help="`up --tier-transport` (default: up's).")
    p.add_argument(
        "--versus-transport", choices=("unix", "tcp"), help="Side by side: a second `up` with this --tier-transport."
    )
    p.add_argument(
        "--versus-tree", help="Side by side: a second `up` run from this source tree (PYTHONPATH), e.g. a checkout."
    )
    p.add_argument("--requests", type=int, default=300, help="Requests measured per stack (after 50 of warm-up).")
    p.add_argument("--profile-s", type=float, default=20.0, help="Seconds of py-spy sampling, under the same load.")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second.")
    p.add_argument("--top", type=int, default=12, help="Functions listed per process.")
    p.add_argument("--no-profile", action="store_true", help="Latency and CPU only, no py-spy.")
    p.add_argument("--no-baseline", action="store_true", help="Leave out the in-process pyfunc.")
    p.add_argument("--json", help="Write the figures here too.")
    args = p.parse_args(argv)

    from splitserve.bench.corpus import docstring_corpus
    from splitserve.bench.run import bundle_or_minilm

    bundle = bundle_or_minilm(args.bundle)
    texts = [t for t in docstring_corpus() if len(t) < 200]

    flags = ["--inline-stages"] if args.inline_stages else []
    main_flags = flags + (["--tier-transport", args.tier_transport] if args.tier_transport else [])
    report: dict[str, Any] = {"bundle": bundle, "inline_stages": args.inline_stages, "requests": args.requests}
    stacks: list[Stack] = []
    try:
        stacks.append(Stack(f"this tree{' ' + ' '.join(main_flags) if main_flags else ''}", bundle, main_flags))
        if args.versus_transport:
            versus = [*flags, "--tier-transport", args.versus_transport]
            stacks.append(Stack(f"this tree {' '.join(versus)}", bundle, versus))
        if args.versus_tree:
            stacks.append(
                Stack(f"{args.versus_tree}{' ' + ' '.join(flags) if flags else ''}", bundle, flags, args.versus_tree)
            )
        pyfunc = None if args.no_baseline else Pyfunc(bundle)
        report.update(measure(stacks, texts, args.requests, pyfunc))
        if not args.no_profile:  # the first stack's processes, under the same load
            first = stacks[0]
            out = Path(tempfile.mkdtemp(prefix="profile-hops-"))
            spies = profile(first.processes, args.profile_s, out, args.rate)
            stop = threading.Event()
            timer = threading.Timer(args.profile_s + 1, stop.set)
            timer.start()
            while not stop.is_set():
                drive(first.client, texts, 10)
            for spy in spies:
                spy.wait(30)
            report["profiled"] = first.label
            report["top_functions"] = {
                name: top_functions(sorted(out.glob(f"{name}-*.txt")), args.top) for name in first.processes
            }
    finally:
        for stack in stacks:
            stack.stop()
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def render(report: dict[str, Any]) -> str:
    kind = "inline (--inline-stages)" if report["inline_stages"] else "three tiers"
    stacks = report["stacks"]
    lines = [f"# {kind}: {report['requests']} single-record requests per stack, concurrency 1", ""]
    lines.append(
        f"{os.cpu_count()} CPUs; stacks side by side, in turns of 10 requests; MiniLM-sized bundle: {report['bundle']}"
    )
    lines += [
        "",
        "| stack | p50 ms | p90 ms | "
        + " | ".join(f"{n} CPU ms/request" for n in next(iter(stacks.values()))["cpu_ms_per_request"])
        + " |",
    ]
    lines.append("|---" * (3 + len(next(iter(stacks.values()))["cpu_ms_per_request"])) + "|")
    for label, fig in stacks.items():
        cpu = " | ".join(str(v) for v in fig["cpu_ms_per_request"].values())
        lines.append(f"| {label} | {fig['p50_ms']} | {fig['p90_ms']} | {cpu} |")
    lines += ["", "CPU per request is each process's CPU over the run less what it spends idle (measured for"]
    lines.append(f"{IDLE_S:.0f} s before; ms of CPU per second):")
    lines += [f"- {label}: {fig['idle_cpu_ms_per_s']}" for label, fig in stacks.items()]
    if "pyfunc_p50_ms" in report:
        lines += ["", f"In-process pyfunc p50 (in the same turns): {report['pyfunc_p50_ms']} ms."]
    for name, views in report.get("top_functions", {}).items():
        waits = ", ".join(f"{share}% {what}" for what, share in views["waits"].items())
        lines += [
            "",
            f"## {name} of {report['profiled']} (py-spy, {views['samples']} samples; epoll waits left out: {waits})",
            "",
        ]
        lines += ["| own % | function | inclusive % | function |", "|---|---|---|---|"]
        for (f_own, s_own), (f_inc, s_inc) in zip(views["own"], views["inclusive"], strict=False):
            lines.append(f"| {s_own} | `{f_own}` | {s_inc} | `{f_inc}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
