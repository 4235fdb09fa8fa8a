"""The load driver and what it measures: closed-loop requests at a concurrency, latency
percentiles, CPU-seconds per record and peak RSS of every process (the OS's own accounting)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from splitserve.bench.targets import Target


@dataclass
class Point:
    target: str
    request_set: str
    concurrency: int
    batch_size: int
    requests: int
    records: int
    seconds: float
    throughput_rps: float  # records per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    cpu_s_per_record: dict[str, float] = field(default_factory=dict)  # per process group
    runs_rps: list[float] = field(default_factory=list)  # every repeat's throughput (the figures are medians)
    spread_pct: float = 0.0  # (max - min) / median of the repeats' throughput
    gflop_per_cpu_s: float | None = None  # the model's FLOPs per record over all processes' CPU-s per record
    roof_fraction: float | None = None  # of this machine's GEMM roof in the target's precision
    padding_fraction: float | None = None  # of the token positions the model tier ran (model-tier targets)


@dataclass
class TargetSummary:
    target: str
    peak_rss_mb: dict[str, float]
    startup_s: float


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, from the kernel's own accounting."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


def repeat_point(
    target: Target,
    texts: list[str],
    concurrency: int,
    batch_size: int,
    seconds: float,
    repeats: int,
    stop: threading.Event | None = None,
) -> Point:
    """`run_point` `repeats` times: the median of each figure, every throughput, and their spread.
    Once `stop` is set, no run starts and the one under way ends after its requests in flight."""
    runs = []
    for _ in range(repeats):
        runs.append(run_point(target, texts, concurrency, batch_size, seconds, concurrency * 2, stop))
        if stop is not None and stop.is_set():
            break
    rps = [p.throughput_rps for p in runs]
    median = sorted(runs, key=lambda p: p.throughput_rps)[len(runs) // 2]

    def mid(values: list[float]) -> float:
        return round(float(np.median(values)), 3)

    # The process groups every run saw (a replica that died and came back is counted where it was seen).
    groups = [g for g in runs[0].cpu_s_per_record if all(g in p.cpu_s_per_record for p in runs)]
    return Point(
        target=median.target,
        request_set=median.request_set,
        concurrency=concurrency,
        batch_size=batch_size,
        requests=sum(p.requests for p in runs),
        records=sum(p.records for p in runs),
        seconds=round(sum(p.seconds for p in runs), 3),
        throughput_rps=mid(rps),
        p50_ms=mid([p.p50_ms for p in runs]),
        p95_ms=mid([p.p95_ms for p in runs]),
        p99_ms=mid([p.p99_ms for p in runs]),
        errors=sum(p.errors for p in runs),
        cpu_s_per_record={g: round(float(np.median([p.cpu_s_per_record[g] for p in runs])), 6) for g in groups},
        runs_rps=rps,
        spread_pct=round((max(rps) - min(rps)) / max(float(np.median(rps)), 1e-9) * 100, 1),
    )


def run_point(
    target: Target,
    texts: list[str],
    concurrency: int,
    batch_size: int,
    seconds: float,
    min_requests: int,
    stop: threading.Event | None = None,
) -> Point:
    """Closed-loop load: `concurrency` threads each send requests of `batch_size` records back to back
    (until `stop` is set, if it is)."""
    groups = target.processes()
    cpu_before = {g: sum(cpu_seconds(p) for p in pids) for g, pids in groups.items()}
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(10**9))
    stop_at = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal errors
        while True:
            i = next(counter)
            if (time.perf_counter() >= stop_at and i >= min_requests) or (stop is not None and stop.is_set()):
                return
            batch = [texts[(i * batch_size + k) % len(texts)] for k in range(batch_size)]
            t0 = time.perf_counter()
            try:
                target.call(batch)
            except Exception:  # noqa: BLE001 - counted, and the run goes on
                with lock:
                    errors += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - start
    records = len(latencies) * batch_size
    after = target.processes()  # a replica that died meanwhile is not counted
    cpu = {
        g: (sum(cpu_seconds(p) for p in pids) - cpu_before[g]) / max(records, 1)
        for g, pids in groups.items()
        if set(after.get(g, [])) == set(pids)
    }
    lat = np.asarray(latencies) * 1000 if latencies else np.asarray([float("nan")])
    return Point(
        target=target.name,
        request_set="",
        concurrency=concurrency,
        batch_size=batch_size,
        requests=len(latencies),
        records=records,
        seconds=round(wall, 3),
        throughput_rps=round(records / wall, 2),
        p50_ms=round(float(np.percentile(lat, 50)), 3),
        p95_ms=round(float(np.percentile(lat, 95)), 3),
        p99_ms=round(float(np.percentile(lat, 99)), 3),
        errors=errors,
        cpu_s_per_record={g: round(v, 6) for g, v in cpu.items()},
    )
