"""How a model replica spends the cores it is given: one intra-op thread per batch and several
batches at once under load (throughput), every core for a batch that runs alone (latency when
idle). The batcher picks per batch (`batching.Batcher`, `infer_alone`); this says how many."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ThreadPlan:
    threads: int  # intra-op threads of a batch under load (0: the runtime's default)
    idle_threads: int  # intra-op threads of a batch that runs alone (0: no such path)
    lanes: int  # batches run at once


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity; where unknown, the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
