"""`splitserve bench`: the same request set against every way of serving one model, in one run.

Targets: the gateway with the model tier on ONNX fp32, on ONNX int8 and on PyTorch (all tiers
as real processes via `splitserve up`), in-process `transformers.pipeline` on PyTorch, the
bundle's pyfunc in-process, and `mlflow models serve` of the source model over HTTP. For each:
throughput and latency percentiles at several concurrency levels and batch sizes, CPU-seconds
per record of every process (from the OS's own accounting) and peak RSS of every process.
Outputs: a markdown table, a JSON file and PNG plots, logged to MLflow as a run.

The targets, the default profile (a few minutes) and `--full` (the committed figures) are in
`plan`; the run itself, its progress line and its clean stop on Ctrl-C in `run`.
"""

from __future__ import annotations

from typing import Any

from splitserve.bench.plan import ALL_TARGETS, DEFAULT, FULL, TARGETS

DEFAULT_CONCURRENCY = DEFAULT.concurrency
DEFAULT_BATCH_SIZES = DEFAULT.batch_sizes

__all__ = ["ALL_TARGETS", "DEFAULT", "FULL", "TARGETS", "docstring_corpus", "fixed_length_set", "run_bench"]


def __getattr__(name: str) -> Any:
    """The heavy parts on first use, so that `splitserve --help` imports only the plan."""
    if name == "run_bench":
        from splitserve.bench.run import run_bench

        return run_bench
    if name in ("docstring_corpus", "fixed_length_set"):
        from splitserve.bench import corpus

        return getattr(corpus, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
