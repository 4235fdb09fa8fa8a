"""One bench run: export the bundle(s), start each target in turn, run its points, then the report.

Ctrl-C (SIGINT, to the bench alone or to its whole process group) or SIGTERM stops it cleanly: the
point under way ends within a request, the target is stopped (its processes run in sessions of
their own, so the terminal's Ctrl-C reaches the bench, which stops them in order), and the report
is written with every point measured so far, marked as interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from splitserve.bench import plan
from splitserve.bench.corpus import docstring_corpus, fixed_length_set
from splitserve.bench.load import Point, TargetSummary, peak_rss_mb, repeat_point
from splitserve.bench.report import headline, markdown, plots, roofline_markdown
from splitserve.bench.roofline import flops_per_token, precision_of, roofs
from splitserve.bench.targets import (
    CachedGatewayTarget,
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
from splitserve.steps import Steps, escape


class Interrupted(BaseException):  # not swallowed by a library's `except Exception`
    """Raised in the bench's main thread by the first SIGINT/SIGTERM while a target starts."""


class Stop:
    """The run's stop flag, set by SIGINT or SIGTERM. While a target starts (a blocking wait on its
    processes) the signal also raises `Interrupted`; while points run, the load threads see the flag
    and end after their request in flight."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.raising = False

    def _handler(self, signum: int, frame: object) -> None:
        if self.event.is_set():
            return  # already stopping: the report is being written
        self.event.set()
        if self.raising:
            raise Interrupted

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, self._handler) for s in signals}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def raising_while(self) -> Iterator[None]:
        if self.event.is_set():
            raise Interrupted
        self.raising = True
        try:
            yield
        finally:
            self.raising = False


def run_bench(
    source_uri: str | None,
    out_dir: Path,
    concurrency: tuple[int, ...] = plan.DEFAULT.concurrency,
    batch_sizes: tuple[int, ...] = plan.DEFAULT.batch_sizes,
    seconds: float = plan.DEFAULT.seconds,
    targets: tuple[str, ...] | None = None,
    command: str = "",
    device: str = "cpu",
    repeats: int = plan.DEFAULT.repeats,
    request_sets: tuple[str, ...] = plan.DEFAULT.request_sets,
    roofline: bool = True,
    int8_gate: str = "fast",
) -> dict[str, Any]:
    """Run the bench and write its report into `out_dir`; returns the report (`interrupted`: whether
    SIGINT/SIGTERM cut it short, `planned_points` beside the points measured). `int8_gate`: the
    quality gate of the int8 bundle (`plan.INT8_GATES`)."""
    names = plan.check_targets(targets or plan.DEFAULT.targets)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_target = plan.points_of(concurrency, batch_sizes, plan.check_request_sets(request_sets))
    log_source = source_uri is None
    estimate = plan.estimate_s(names, len(per_target), seconds, repeats, log_source, roofline)
    stop = Stop()
    with Steps() as steps:
        steps.say(
            f"bench: {len(names)} target(s) × {len(per_target)} points × {repeats} run(s) of {seconds:g}s, about "
            f"{plan.clock(estimate)} in all (estimated); Ctrl-C stops it and writes what was measured"
        )
        started = time.monotonic()
        source_uri, fp32, int8 = _bundles(source_uri, names, steps, plan.INT8_GATES[int8_gate])
        chosen = _targets(names, source_uri, fp32, int8, device)
        setup = plan.setup_s(names, log_source)
        starts = [plan.start_s(n) for n in names]
        eta = Eta(started, setup, starts, len(per_target), plan.point_s(seconds, repeats), plan.finish_s(roofline))
        with stop.installed():  # from here on, a signal stops the run and the report is still written
            points, summaries, failed = _measure(chosen, per_target, seconds, repeats, stop, steps, eta)
            interrupted = stop.event.is_set()
            if interrupted:
                steps.say(f"interrupted: writing the {len(points)} point(s) measured to {escape(str(out_dir))}")
            roofline = roofline and not interrupted  # a stopped run skips the roofs (some seconds)
            t = steps.step("Writing the report" + (", with this machine's GEMM roofs" if roofline else ""))
            run = {
                "command": command,
                "source_uri": source_uri,
                "bundles": {"fp32": fp32, "int8": int8},
                "int8_gate": int8_gate,
                "device": device,
                "concurrency": list(concurrency),
                "batch_sizes": list(batch_sizes),
                "seconds": seconds,
                "repeats": repeats,
                "request_sets": list(request_sets),
                "interrupted": interrupted,
                "roofline": roofline,
                "planned_points": len(names) * len(per_target),
            }
            report = _report(points, summaries, failed, run)
            _write(report, points, summaries, out_dir, command)
            steps.done(t, f"Wrote {out_dir / 'results.md'}, results.json and the plots")
    print((out_dir / "results.md").read_text(), flush=True)
    return report


def bundle_or_minilm(bundle_uri: str | None) -> str:
    """`bundle_uri`, or else the bundled all-MiniLM-L6-v2 logged to the current MLflow store and
    exported (fp32): what the benchmark scripts measure when not told."""
    if bundle_uri:
        return bundle_uri
    from splitserve.commands.log import DEFAULT_TASK, log_pipeline
    from splitserve.export import export_bundle

    return export_bundle(log_pipeline(None, DEFAULT_TASK, None), show_progress=False)


def _bundles(
    source_uri: str | None, names: tuple[str, ...], steps: Steps, int8_gate: dict[str, float] | None
) -> tuple[str, str, str]:
    from splitserve.commands.log import DEFAULT_TASK, log_pipeline
    from splitserve.export import export_bundle

    if source_uri is None:
        t = steps.step("Logging the bundled all-MiniLM-L6-v2 as the source model")
        source_uri = log_pipeline(None, DEFAULT_TASK, None)
        steps.done(t, f"Logged {source_uri}")
    t = steps.step(f"Exporting the serving bundle of {source_uri}")
    fp32 = export_bundle(source_uri, name="bench-fp32", show_progress=False)
    steps.done(t, f"Exported {fp32}")
    int8 = ""
    if any("int8" in n for n in names):
        t = steps.step("Exporting its int8 bundle")
        int8 = export_bundle(
            source_uri, name="bench-int8", quantize="int8", quality_thresholds=int8_gate, show_progress=False
        )
        steps.done(t, f"Exported {int8}")
    return source_uri, fp32, int8


def _targets(names: tuple[str, ...], source_uri: str, fp32: str, int8: str, device: str) -> list[Target]:
    available: dict[str, Target] = {
        t.name: t
        for t in (
            GatewayTarget("gateway-onnx-fp32", fp32, "onnx", device=device),
            GatewayTarget("gateway-onnx-int8", int8, "onnx", device=device),
            GatewayTarget("gateway-torch", fp32, "torch", device=device),
            GatewayTarget("gateway-onnx-fp32-inline", fp32, "onnx", inline_stages=True, device=device),
            GatewayTarget("gateway-onnx-int8-inline", int8, "onnx", inline_stages=True, device=device),
            CachedGatewayTarget("gateway-cache-0", fp32, 0, device=device),
            CachedGatewayTarget("gateway-cache-50", fp32, 5, device=device),
            CachedGatewayTarget("gateway-cache-90", fp32, 9, device=device),
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
    return [available[n] for n in names]


REQUEST_SETS: dict[str, list[str]] = {}


def request_sets() -> dict[str, list[str]]:
    if not REQUEST_SETS:
        corpus = docstring_corpus()
        REQUEST_SETS.update({"docstrings": corpus, "fixed-24-words": fixed_length_set(corpus)})
    return REQUEST_SETS


def _measure(
    chosen: list[Target],
    per_target: list[tuple[str, int, int]],
    seconds: float,
    repeats: int,
    stop: Stop,
    steps: Steps,
    eta: Eta,
) -> tuple[list[Point], list[TargetSummary], dict[str, str]]:
    """Every target's points, until done or stopped."""
    sets = request_sets()
    points: list[Point] = []
    summaries: list[TargetSummary] = []
    failed: dict[str, str] = {}
    total, position = len(chosen) * len(per_target), 0
    for index, target in enumerate(chosen):
        if stop.event.is_set():
            break
        t = steps.step(f"Starting {target.name}; about {plan.clock(eta.left(index, 0))} left")
        t0 = time.perf_counter()
        try:
            with stop.raising_while():
                target.start()
                for _ in range(2):  # warm-up
                    target.call(sets["docstrings"][:8])
        except Interrupted:
            steps.drop(t)
            target.stop()
            break
        except Exception as exc:  # noqa: BLE001 - one target that cannot start does not sink the run
            steps.drop(t)
            steps.say(f"[red]{target.name} did not start: {escape(str(exc))}[/]")
            failed[target.name] = str(exc)
            target.stop()
            position += len(per_target)
            continue
        startup = time.perf_counter() - t0
        steps.done(t, f"Started {target.name}")
        try:
            for j, (request_set, c, b) in enumerate(per_target):
                position += 1
                what = f"{target.name} {request_set} c={c} b={b}"
                h = steps.step(
                    f"[{position}/{total}] {what}; {plan.clock(eta.elapsed())} elapsed, "
                    f"about {plan.clock(eta.left(index, j, started=True))} left"
                )
                tier = target if isinstance(target, ModelTierTarget) else None
                before = tier.tokens() if tier is not None else None
                point = repeat_point(target, sets[request_set], c, b, seconds, repeats, stop=stop.event)
                if stop.event.is_set():  # cut short: not a measurement of `seconds` x `repeats`
                    steps.drop(h)
                    break
                if tier is not None and before is not None:
                    after = tier.tokens()
                    real, pad = after["real"] - before["real"], after["padding"] - before["padding"]
                    point.padding_fraction = round(pad / max(real + pad, 1.0), 4)
                point.request_set = request_set
                points.append(point)
                steps.done(
                    h, f"{what}: {point.throughput_rps:.1f} records/s, p50 {point.p50_ms:.1f} ms, {point.errors} errors"
                )
            groups = target.processes()
            rss = {g: max(peak_rss_mb(p) for p in pids) for g, pids in groups.items()}
            summaries.append(TargetSummary(target.name, rss, round(startup, 2)))
        finally:
            target.stop()
    return points, summaries, failed


class Eta:
    """Time left: the plan's estimate of what is not done yet, scaled by how long what is done took
    against its own estimate (counted from the start: logging and exporting included)."""

    def __init__(
        self, started: float, setup_s: float, start_s: list[float], points: int, point_s: float, finish_s: float
    ):
        self.started, self.setup_s, self.start_s, self.points, self.point_s = started, setup_s, start_s, points, point_s
        self.total = setup_s + sum(s + points * point_s for s in start_s)
        self.finish_s = finish_s

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self, index: int, point: int, started: bool = False) -> float:
        """Seconds left before target `index`'s `point` (its start done if `started`), the report included."""
        done = self.setup_s + sum(s + self.points * self.point_s for s in self.start_s[:index])
        done += (self.start_s[index] if started else 0.0) + point * self.point_s
        elapsed = self.elapsed()
        scale = min(max(elapsed / done, 0.5), 3.0) if elapsed > 30 and done > 0 else 1.0
        return scale * (self.total - done) + self.finish_s


def _report(
    points: list[Point], summaries: list[TargetSummary], failed: dict[str, str], run: dict[str, Any]
) -> dict[str, Any]:
    machine_roofs: dict[str, float] = {}
    flops: dict[str, float] = {}
    if points and run["roofline"]:
        machine_roofs = roofs()
        flops = _flops_per_record(
            run["source_uri"], {k: v for k, v in request_sets().items() if k in run["request_sets"]}
        )
    for p in points:
        cpu = sum(p.cpu_s_per_record.values())
        if cpu > 0 and p.request_set in flops:
            p.gflop_per_cpu_s = round(flops[p.request_set] / cpu / 1e9, 3)
            roof = machine_roofs.get(precision_of(p.target))
            p.roof_fraction = round(p.gflop_per_cpu_s / roof, 5) if roof else None
    point_dicts = [asdict(p) for p in points]
    # The capacity table (pods per model pod) `splitserve k8s --capacity results.json` sizes tiers with.
    tables = capacity_tables(point_dicts, run["device"]) if any(p.target == THREE_TIERS_TARGET for p in points) else {}
    return {
        "command": run["command"],
        "source_uri": run["source_uri"],
        "bundles": run["bundles"],
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu_features": list(cpu_features()),
            "python": platform.python_version(),
        },
        **{k: run[k] for k in ("device", "repeats", "seconds", "concurrency", "batch_sizes", "request_sets")},
        "interrupted": run["interrupted"],
        "planned_points": run["planned_points"],
        "roofs_gflop_per_cpu_s": machine_roofs,
        "flops_per_record": {k: round(v) for k, v in flops.items()},
        "headline": headline(points, tuple(run["concurrency"]), tuple(run["batch_sizes"])) if points else {},
        "capacity": tables,
        "points": point_dicts,
        "targets": [asdict(s) for s in summaries],
        "failed_targets": failed,
    }


def _write(
    report: dict[str, Any], points: list[Point], summaries: list[TargetSummary], out_dir: Path, command: str
) -> None:
    import mlflow

    (out_dir / "results.json").write_text(json.dumps(report, indent=2))
    note = (
        f"\n**Interrupted** after {len(points)} of {report['planned_points']} points: the figures below are "
        "those measured before it.\n"
        if report["interrupted"]
        else ""
    )
    text = markdown(points, summaries, report["headline"], command)
    if report["roofs_gflop_per_cpu_s"]:
        text += roofline_markdown(points, report["roofs_gflop_per_cpu_s"])
    if points:
        text += capacity_markdown(report["capacity"])
    (out_dir / "results.md").write_text(text.replace("\n## ", note + "\n## ", 1) if note else text)
    images = plots(points, out_dir) if points else []
    with mlflow.start_run(run_name="splitserve-bench"):
        mlflow.set_tag("splitserve.bench.interrupted", str(report["interrupted"]).lower())
        mlflow.log_params({k: report[k] for k in ("source_uri", "concurrency", "batch_sizes", "seconds", "repeats")})
        mlflow.log_metrics(report["headline"])
        for p in points:
            key = f"{p.target}.{p.request_set}.c{p.concurrency}.b{p.batch_size}"
            mlflow.log_metrics({f"{key}.rps": p.throughput_rps, f"{key}.p50_ms": p.p50_ms, f"{key}.p99_ms": p.p99_ms})
        for f in [out_dir / "results.json", out_dir / "results.md", *images]:
            mlflow.log_artifact(str(f))


def _flops_per_record(source_uri: str, sets: dict[str, list[str]]) -> dict[str, float]:
    """The source model's FLOPs per record of each request set, at its mean real token count."""
    import mlflow.transformers

    components = mlflow.transformers.load_model(source_uri, return_type="components")
    out = {}
    for name, texts in sets.items():
        lengths = [len(ids) for ids in components["tokenizer"](texts, truncation=True)["input_ids"]]
        mean = float(np.mean(lengths))
        out[name] = flops_per_token(components["model"].config, mean) * mean
    return out
