"""`splitserve bench`: the same request set against every way of serving one model, in one run.

Targets: the gateway with the model tier on ONNX fp32, on ONNX int8 and on PyTorch (all tiers
as real processes via `splitserve up`), in-process `transformers.pipeline` on PyTorch, the
bundle's pyfunc in-process, and `mlflow models serve` of the source model over HTTP. For each:
throughput and latency percentiles at several concurrency levels and batch sizes, CPU-seconds
per record of every process (from the OS's own accounting) and peak RSS of every process.
Outputs: a markdown table, a JSON file and PNG plots, logged to MLflow as a run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from splitserve.bench.corpus import docstring_corpus, fixed_length_set
from splitserve.bench.load import Point, TargetSummary, peak_rss_mb, repeat_point
from splitserve.bench.report import headline, markdown, plots, roofline_markdown
from splitserve.bench.roofline import flops_per_token, precision_of, roofs
from splitserve.bench.targets import (
    GatewayTarget,
    MlflowServeTarget,
    ModelTierTarget,
    PipelineTarget,
    PyfuncTarget,
    Target,
)
from splitserve.core.cpu import cpu_features
from splitserve.k8s.capacity import THREE_TIERS_TARGET, capacity_markdown
from splitserve.k8s.capacity import tables as capacity_tables

DEFAULT_CONCURRENCY = (1, 4, 16)
DEFAULT_BATCH_SIZES = (1, 8)

__all__ = ["docstring_corpus", "fixed_length_set", "run_bench"]


ALL_TARGETS = (
    "gateway-onnx-fp32",
    "gateway-onnx-int8",
    "gateway-torch",
    "gateway-onnx-fp32-inline",
    "gateway-onnx-int8-inline",
    "model-tier-onnx-fp32",
    "model-tier-onnx-int8",
    "model-tier-torch",
    "model-tier-torch-bf16",
    "pipeline-in-process",
    "pyfunc-in-process",
    "pyfunc-in-process-int8",
    "mlflow-models-serve",
)


def run_bench(
    source_uri: str | None,
    out_dir: Path,
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    seconds: float = 6.0,
    targets: tuple[str, ...] | None = None,
    command: str = "",
    device: str = "cpu",
    repeats: int = 3,
) -> dict[str, Any]:
    import mlflow
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from splitserve.export import export_bundle
    from splitserve.source import DEFAULT_TASK, log_pipeline

    console = Console(stderr=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    if source_uri is None:
        console.print("Logging the bundled all-MiniLM-L6-v2 as the source model")
        source_uri = log_pipeline(None, DEFAULT_TASK, None)
    names = targets or ALL_TARGETS
    unknown = sorted(set(names) - set(ALL_TARGETS))
    if unknown:
        raise ValueError(f"unknown bench target(s) {unknown}; known: {list(ALL_TARGETS)}")
    console.print(f"Exporting the serving bundle(s) of {source_uri}")
    fp32 = export_bundle(source_uri, name="bench-fp32", show_progress=False)
    int8 = (
        export_bundle(source_uri, name="bench-int8", quantize="int8", show_progress=False)
        if any("int8" in n for n in names)
        else ""
    )
    available: dict[str, Target] = {
        t.name: t
        for t in (
            GatewayTarget("gateway-onnx-fp32", fp32, "onnx", device=device),
            GatewayTarget("gateway-onnx-int8", int8, "onnx", device=device),
            GatewayTarget("gateway-torch", fp32, "torch", device=device),
            GatewayTarget("gateway-onnx-fp32-inline", fp32, "onnx", inline_stages=True, device=device),
            GatewayTarget("gateway-onnx-int8-inline", int8, "onnx", inline_stages=True, device=device),
            ModelTierTarget("model-tier-onnx-fp32", fp32, "onnx", device=device),
            ModelTierTarget("model-tier-onnx-int8", int8, "onnx", device=device),
            ModelTierTarget("model-tier-torch", fp32, "torch", device=device, dtype="fp32"),
            ModelTierTarget("model-tier-torch-bf16", fp32, "torch", device=device, dtype="bf16"),
            PipelineTarget("pipeline-in-process", source_uri),
            PyfuncTarget("pyfunc-in-process", fp32),
            PyfuncTarget("pyfunc-in-process-int8", int8),
            MlflowServeTarget("mlflow-models-serve", source_uri),
        )
    }
    chosen = [available[t] for t in names]
    corpus = docstring_corpus()
    request_sets = {"docstrings": corpus, "fixed-24-words": fixed_length_set(corpus)}
    plan = [
        (rs, c, b)
        for rs in request_sets
        for c in concurrency
        for b in batch_sizes
        if rs == "docstrings" or (c == max(concurrency) and b == max(batch_sizes))
    ]
    points: list[Point] = []
    summaries: list[TargetSummary] = []
    failed: dict[str, str] = {}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        overall = progress.add_task("bench", total=len(chosen) * len(plan))
        for target in chosen:
            progress.update(overall, description=f"starting {target.name}")
            t0 = time.perf_counter()
            try:
                target.start()
            except Exception as exc:  # noqa: BLE001 - one target that cannot start does not sink the run
                console.print(f"[red]{target.name} did not start: {exc}[/]")
                failed[target.name] = str(exc)
                progress.advance(overall, len(plan))
                continue
            startup = time.perf_counter() - t0
            try:
                for _ in range(2):  # warm-up
                    target.call(corpus[:8])
                for request_set, c, b in plan:
                    progress.update(overall, description=f"{target.name} {request_set} c={c} b={b}")
                    before = target.tokens() if isinstance(target, ModelTierTarget) else None
                    point = repeat_point(target, request_sets[request_set], c, b, seconds, repeats)
                    if before is not None:
                        after = target.tokens()  # type: ignore[attr-defined]
                        real, pad = after["real"] - before["real"], after["padding"] - before["padding"]
                        point.padding_fraction = round(pad / max(real + pad, 1.0), 4)
                    point.request_set = request_set
                    points.append(point)
                    progress.advance(overall)
                groups = target.processes()
                summaries.append(
                    TargetSummary(
                        target.name,
                        {g: max(peak_rss_mb(p) for p in pids) for g, pids in groups.items()},
                        round(startup, 2),
                    )
                )
            finally:
                target.stop()
    console.print("Measuring this machine's GEMM roofs")
    machine_roofs = roofs()
    flops = {name: _flops_per_record(source_uri, texts) for name, texts in request_sets.items()}
    for p in points:
        cpu = sum(p.cpu_s_per_record.values())
        if cpu > 0:
            p.gflop_per_cpu_s = round(flops[p.request_set] / cpu / 1e9, 3)
            roof = machine_roofs.get(precision_of(p.target))
            p.roof_fraction = round(p.gflop_per_cpu_s / roof, 5) if roof else None
    heads = headline(points, concurrency, batch_sizes)
    point_dicts = [asdict(p) for p in points]
    # The capacity table (pods per model pod) `splitserve k8s --capacity results.json` sizes tiers with.
    tables = capacity_tables(point_dicts, device) if any(p.target == THREE_TIERS_TARGET for p in points) else {}
    report = {
        "command": command,
        "source_uri": source_uri,
        "bundles": {"fp32": fp32, "int8": int8},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu_features": list(cpu_features()),
            "python": platform.python_version(),
        },
        "device": device,
        "repeats": repeats,
        "roofs_gflop_per_cpu_s": machine_roofs,
        "flops_per_record": {k: round(v) for k, v in flops.items()},
        "headline": heads,
        "capacity": tables,
        "points": point_dicts,
        "targets": [asdict(s) for s in summaries],
        "failed_targets": failed,
    }
    (out_dir / "results.json").write_text(json.dumps(report, indent=2))
    (out_dir / "results.md").write_text(
        markdown(points, summaries, heads, command)
        + roofline_markdown(points, machine_roofs)
        + capacity_markdown(tables)
    )
    images = plots(points, out_dir)
    with mlflow.start_run(run_name="splitserve-bench"):
        mlflow.log_params(
            {
                "source_uri": source_uri,
                "concurrency": list(concurrency),
                "batch_sizes": list(batch_sizes),
                "seconds": seconds,
            }
        )
        mlflow.log_metrics({k: v for k, v in heads.items() if v is not None})
        for p in points:
            key = f"{p.target}.{p.request_set}.c{p.concurrency}.b{p.batch_size}"
            mlflow.log_metrics({f"{key}.rps": p.throughput_rps, f"{key}.p50_ms": p.p50_ms, f"{key}.p99_ms": p.p99_ms})
        for f in [out_dir / "results.json", out_dir / "results.md", *images]:
            mlflow.log_artifact(str(f))
    console.print((out_dir / "results.md").read_text())
    return report


def _flops_per_record(source_uri: str, texts: list[str]) -> float:
    """The source model's FLOPs per record of a request set, at its mean real token count."""
    import mlflow.transformers

    components = mlflow.transformers.load_model(source_uri, return_type="components")
    lengths = [len(ids) for ids in components["tokenizer"](texts, truncation=True)["input_ids"]]
    mean = float(np.mean(lengths))
    return flops_per_token(components["model"].config, mean) * mean
