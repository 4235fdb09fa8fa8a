"""The bench's reports: headline ratios, the markdown table and the PNG plots."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from splitserve.bench.load import Point, TargetSummary
from splitserve.core.cpu import describe as describe_cpu


def ratio(
    points: list[Point], a: str, b: str, concurrency: int, batch: int, request_set: str = "docstrings"
) -> float | None:
    """Throughput of target a over target b at one point; None when either was not measured."""

    def find(name: str) -> Point | None:
        for p in points:
            if (p.target, p.concurrency, p.batch_size, p.request_set) == (name, concurrency, batch, request_set):
                return p
        return None

    pa, pb = find(a), find(b)
    if pa is None or pb is None or not pb.throughput_rps:
        return None
    return round(pa.throughput_rps / pb.throughput_rps, 3)


def headline(points: list[Point], concurrency: tuple[int, ...], batch_sizes: tuple[int, ...]) -> dict[str, float]:
    """The ratios the project's targets are stated in, of the targets that were run."""
    cmax, bmax = max(concurrency), max(batch_sizes)
    pairs = {  # name: (target, baseline), throughput at the largest concurrency and batch
        "onnx_fp32_vs_torch_tier": ("gateway-onnx-fp32", "gateway-torch"),
        "onnx_int8_vs_torch_tier": ("gateway-onnx-int8", "gateway-torch"),
        "model_tier_fp32_vs_torch": ("model-tier-onnx-fp32", "model-tier-torch"),
        "model_tier_int8_vs_torch": ("model-tier-onnx-int8", "model-tier-torch"),
        "gateway_fp32_vs_inprocess_pyfunc": ("gateway-onnx-fp32", "pyfunc-in-process"),
        "gateway_inline_fp32_vs_inprocess_pyfunc": ("gateway-onnx-fp32-inline", "pyfunc-in-process"),
        "gateway_fp32_vs_mlflow_serve": ("gateway-onnx-fp32", "mlflow-models-serve"),
        "gateway_fp32_vs_torch_pipeline": ("gateway-onnx-fp32", "pipeline-in-process"),
        "gateway_int8_vs_mlflow_serve": ("gateway-onnx-int8", "mlflow-models-serve"),
        "model_tier_int8_vs_fp32": ("model-tier-onnx-int8", "model-tier-onnx-fp32"),
        "model_tier_fp32_vs_inprocess_pyfunc": ("model-tier-onnx-fp32", "pyfunc-in-process"),
        "model_tier_int8_vs_inprocess_pyfunc_int8": ("model-tier-onnx-int8", "pyfunc-in-process-int8"),
        "gateway_inline_int8_vs_mlflow_serve": ("gateway-onnx-int8-inline", "mlflow-models-serve"),
        "model_tier_torch_bf16_vs_fp32": ("model-tier-torch-bf16", "model-tier-torch"),
    }
    ratios = {f"{name}_c{cmax}_b{bmax}": ratio(points, a, b, cmax, bmax) for name, (a, b) in pairs.items()}
    out: dict[str, float] = {k: v for k, v in ratios.items() if v is not None}  # only what was run
    p1 = {
        p.target: p.p50_ms
        for p in points
        if p.concurrency == 1 and p.batch_size == min(batch_sizes) and p.request_set == "docstrings"
    }
    for name, target in (("gateway", "gateway-onnx-fp32"), ("gateway_inline", "gateway-onnx-fp32-inline")):
        if target in p1 and "pyfunc-in-process" in p1:
            out[f"{name}_added_p50_ms_c1_b1"] = round(p1[target] - p1["pyfunc-in-process"], 3)
    return out


def markdown(points: list[Point], summaries: list[TargetSummary], heads: dict[str, float], command: str) -> str:
    head = ["## Headline ratios (throughput, same run, same requests)", "", "| ratio | value |", "|---|---|"]
    lines = [
        "# splitserve bench",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs ({describe_cpu()}), Python {platform.python_version()}",
        "",
        *([*head, *(f"| {k} | {v} |" for k, v in heads.items()), ""] if heads else []),
        "## Throughput and latency",
        "",
        "| target | set | conc | batch | records/s | p50 ms | p95 ms | p99 ms | errors | CPU-s per record (by process) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        cpu = ", ".join(f"{g}: {v * 1000:.2f} ms" for g, v in p.cpu_s_per_record.items())
        lines.append(
            f"| {p.target} | {p.request_set} | {p.concurrency} | {p.batch_size} | {p.throughput_rps:.1f} | "
            f"{p.p50_ms:.1f} | {p.p95_ms:.1f} | {p.p99_ms:.1f} | {p.errors} | {cpu} |"
        )
    lines += ["", "## Peak RSS (MB) and start-up", "", "| target | start-up s | peak RSS by process |", "|---|---|---|"]
    for s in summaries:
        rss = ", ".join(f"{g}: {v:.0f}" for g, v in s.peak_rss_mb.items())
        lines.append(f"| {s.target} | {s.startup_s:.1f} | {rss} |")
    return "\n".join(lines) + "\n"


def plots(points: list[Point], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    batches = sorted({p.batch_size for p in points})
    targets = list(dict.fromkeys(p.target for p in points))
    for metric, ylabel, fname in (
        ("throughput_rps", "records/s", "throughput.png"),
        ("p50_ms", "p50 latency (ms)", "latency_p50.png"),
    ):
        fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
        for ax, batch in zip(axes[0], batches, strict=True):
            for t in targets:
                pts = sorted(
                    (p for p in points if p.target == t and p.batch_size == batch and p.request_set == "docstrings"),
                    key=lambda p: p.concurrency,
                )
                if pts:
                    ax.plot([p.concurrency for p in pts], [getattr(p, metric) for p in pts], marker="o", label=t)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency (requests in flight)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{ylabel}, {batch} record(s) per request")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sel = [
        p
        for p in points
        if p.concurrency == max(p.concurrency for p in points)
        and p.batch_size == max(batches)
        and p.request_set == "docstrings"
    ]
    x = np.arange(len(sel))
    for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        ax.bar(x + (i - 1) * 0.27, [getattr(p, q) for p in sel], width=0.27, label=q)
    ax.set_xticks(x, [p.target for p in sel], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title("latency percentiles at the highest concurrency and batch size")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "latency_percentiles.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [*paths, path]


def roofline_markdown(points: list[Point], machine_roofs: dict[str, float]) -> str:
    """Each target's GFLOP per CPU-second (all its processes) against this machine's GEMM roof in
    its precision, at every point; the repeats' spread beside it."""
    lines = [
        "",
        "## Roofline (GFLOP per CPU-second, all processes; medians of the repeats)",
        "",
        "GEMM roofs measured in this run: " + ", ".join(f"{k} {v}" for k, v in machine_roofs.items()),
        "",
        "| target | set | conc | batch | GFLOP/CPU-s | of roof | padding | spread % | runs (records/s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        runs = ", ".join(f"{r:.0f}" for r in p.runs_rps)
        lines.append(
            f"| {p.target} | {p.request_set} | {p.concurrency} | {p.batch_size} | {p.gflop_per_cpu_s} | "
            f"{p.roof_fraction} | {p.padding_fraction if p.padding_fraction is not None else ''} | {p.spread_pct} | {runs} |"
        )
    return "\n".join(lines) + "\n"
