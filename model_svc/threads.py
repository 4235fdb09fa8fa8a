"""How a model replica spends the cores it is given: one intra-op thread per batch and several
batches at once under load (throughput), every core for a batch that runs alone (latency when
idle). The batcher picks per batch (`batching.Batcher`, `infer_alone`); this says how many."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThreadPlan:
    threads: int  # intra-op threads of a batch under load (0: the runtime's default)
    idle_threads: int  # intra-op threads of a batch that runs alone (0: no such path)
    lanes: int  # batches run at once


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity (where unknown, the machine's), at most its
    cgroup's CPU quota rounded up (a container's limit; `os.cpu_count()` there is the node's) and
    `OMP_NUM_THREADS` where set (Ray sets it to a replica's CPUs)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota:
        cores = min(cores, math.ceil(quota))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        cores = min(cores, int(omp))
    return max(1, cores)


def cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup may use per period (cgroup v2 `cpu.max`, v1 `cfs_quota_us`);
    None without a limit."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        try:
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text(encoding="ascii").strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text(encoding="ascii").strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit() or int(period) <= 0:
        return None
    return int(quota) / int(period)


def plan(backend: str, device: str, intra_op_threads: int, idle_threads: int, parallel_batches: int) -> ThreadPlan:
    """ONNX Runtime on CPU: `intra_op_threads` (0: one) per batch under load, `parallel_batches`
    (0: the cores over those threads) at once, and `idle_threads` (0: every core) for a batch
    that runs alone; no idle path where that is no more than the threads under load. Elsewhere
    (torch, CUDA): `intra_op_threads` as given, one batch at a time unless told."""
    cores = usable_cores()
    if backend != "onnx" or device != "cpu":
        return ThreadPlan(intra_op_threads, 0, parallel_batches or 1)
    threads = intra_op_threads or 1
    idle = idle_threads or cores
    return ThreadPlan(threads, idle if idle > threads else 0, parallel_batches or max(1, cores // threads))
