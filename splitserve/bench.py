"""`splitserve bench`: the same request set against every way of serving one model, in one run.

Targets: the gateway with the model tier on ONNX fp32, on ONNX int8 and on PyTorch (all tiers
as real processes via `splitserve up`), in-process `transformers.pipeline` on PyTorch, the
bundle's pyfunc in-process, and `mlflow models serve` of the source model over HTTP. For each:
throughput and latency percentiles at several concurrency levels and batch sizes, CPU-seconds
per record of every process (from the OS's own accounting) and peak RSS of every process.
Outputs: a markdown table, a JSON file and PNG plots, logged to MLflow as a run.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CONCURRENCY = (1, 4, 16)
DEFAULT_BATCH_SIZES = (1, 8)
CORPUS_MODULES = (
    "json", "os", "re", "collections", "itertools", "functools", "pathlib", "argparse", "logging",
    "subprocess", "asyncio", "threading", "datetime", "decimal", "fractions", "statistics", "csv",
    "email", "http.client", "urllib.parse", "textwrap", "string", "heapq", "bisect", "shutil",
)  # fmt: skip


# ----------------------------------------------------------------------------- request sets


def docstring_corpus(limit: int = 512) -> list[str]:
    """Real English sentences of mixed length: the docstrings of Python's standard library."""
    import importlib

    seen: set[str] = set()
    sentences: list[str] = []
    for name in CORPUS_MODULES:
        module = importlib.import_module(name)
        objects = [module, *(getattr(module, a) for a in sorted(dir(module)) if not a.startswith("_"))]
        for obj in objects:
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join((doc or "").split())):
                words = sentence.split()
                if 4 <= len(words) <= 80 and sentence not in seen and not sentence.startswith(">>>"):
                    seen.add(sentence)
                    sentences.append(sentence)
    rng = np.random.default_rng(0)
    rng.shuffle(sentences)
    return sentences[:limit]


def fixed_length_set(corpus: list[str], words: int = 24, limit: int = 256) -> list[str]:
    """Sentences cut to exactly `words` words: a request set without length variance."""
    long = [s for s in corpus if len(s.split()) >= words] or corpus
    return [" ".join((s.split() * words)[:words]) for s in (long * (limit // len(long) + 1))[:limit]]


# ----------------------------------------------------------------------------- measurements


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


class Target:
    """Something that scores records. `processes()` names the OS processes whose CPU and memory count."""

    name = ""

    def start(self) -> None: ...

    def call(self, records: list[str]) -> None:
        raise NotImplementedError

    def stop(self) -> None: ...

    def processes(self) -> dict[str, list[int]]:
        return {"bench (in-process)": [os.getpid()]}


class GatewayTarget(Target):
    """All tiers via `splitserve up`, called through the gateway with the gRPC client."""

    def __init__(self, name: str, bundle_uri: str, backend: str, inline_stages: bool = False):
        self.name, self.bundle_uri, self.backend, self.inline_stages = name, bundle_uri, backend, inline_stages

    def start(self) -> None:
        from splitserve.client import Client

        argv = [sys.executable, "-m", "splitserve", "up", self.bundle_uri, "--backend", self.backend]
        argv += ["--inline-stages"] if self.inline_stages else []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError(f"{self.name}: `splitserve up` exited before it was ready")
        self.addresses = json.loads(line)
        self.client = Client(self.addresses["gateway"])
        self.params = {"pooling": "mean", "normalize": True} if self._task() == "feature-extraction" else None

    def _task(self) -> str:
        from splitserve.client import Client

        with Client(self.addresses["gateway"]) as c:
            return c.info()["task"]

    def call(self, records: list[str]) -> None:
        self.client.predict(records, params=self.params)

    def processes(self) -> dict[str, list[int]]:
        import psutil

        groups: dict[str, list[int]] = {}
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmd = " ".join(child.cmdline())
            except psutil.Error:
                continue
            match = re.search(r"splitserve serve-(\w+)", cmd)
            if match:
                groups.setdefault(match.group(1), []).append(child.pid)
        groups["client (bench)"] = [os.getpid()]
        return groups

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class ModelTierTarget(Target):
    """One model-tier replica alone (`splitserve serve-model`), called over the Open Inference
    Protocol with inputs tokenized beforehand: the model tier's own throughput, ONNX vs PyTorch."""

    def __init__(self, name: str, bundle_uri: str, backend: str):
        self.name, self.bundle_uri, self.backend = name, bundle_uri, backend

    def start(self) -> None:
        import grpc

        from preprocess_svc.tokenize import Preprocessor
        from protos import grpc_predict_v2_pb2_grpc as oip_grpc
        from splitserve.bundle import load_bundle
        from splitserve.launcher import READY_TIMEOUT_S, Replica, serve_command
        from splitserve.records import Limits
        from splitserve.tokenizer import load_tokenizer

        threads = str(os.cpu_count() or 1)
        self.replica = Replica("model", serve_command("serve-model", self.bundle_uri, "--backend", self.backend))
        self.replica.argv += ["--host", "127.0.0.1", "--intra-op-threads", threads, "--log-level", "warning"]
        self.replica.start()
        address = self.replica.wait_ready(time.monotonic() + READY_TIMEOUT_S)
        bundle = load_bundle(self.bundle_uri, ("tokenizer",))
        self.bundle = bundle
        self.stage = Preprocessor(bundle.config, load_tokenizer(bundle.tokenizer_dir), Limits(10**6, 10**9))
        self.channel = grpc.insecure_channel(address)
        self.stub = oip_grpc.GRPCInferenceServiceStub(self.channel)
        self.cache: dict[tuple[str, ...], Any] = {}

    def _request(self, records: list[str]) -> Any:
        from protos import grpc_predict_v2_pb2 as oip
        from splitserve.records import to_records

        key = tuple(records)
        if key not in self.cache:  # tokenize once: only the model tier's work is measured
            encoded = self.stage.run(to_records(records), None)
            request = oip.ModelInferRequest(model_name=self.bundle.config.name, model_version=self.bundle.fingerprint)
            for name, array in encoded.model_inputs.items():
                request.inputs.add(name=name, datatype="INT64", shape=list(array.shape))
                request.raw_input_contents.append(array.astype("<i8").tobytes())
            self.cache[key] = request
        return self.cache[key]

    def call(self, records: list[str]) -> None:
        self.stub.ModelInfer(self._request(records), timeout=120)

    def processes(self) -> dict[str, list[int]]:
        assert self.replica.proc is not None
        return {"model": [self.replica.proc.pid], "client (bench)": [os.getpid()]}

    def stop(self) -> None:
        self.channel.close()
        self.replica.stop()
        self.replica.wait(30)


class PipelineTarget(Target):
    """`transformers.pipeline` on PyTorch in this process: what a notebook user runs."""

    def __init__(self, name: str, source_uri: str):
        self.name, self.source_uri = name, source_uri

    def start(self) -> None:
        import mlflow.transformers

        self.pipe = mlflow.transformers.load_model(self.source_uri)
        self.kwargs: dict[str, Any] = {"truncation": True}
        self.lock = threading.Lock()  # a pipeline object is not safe to share across threads

    def call(self, records: list[str]) -> None:
        with self.lock:
            self.pipe(records, batch_size=len(records), **self.kwargs)


class PyfuncTarget(Target):
    """The serving bundle's pyfunc in this process: the split stages with no transport."""

    def __init__(self, name: str, bundle_uri: str):
        self.name, self.bundle_uri = name, bundle_uri

    def start(self) -> None:
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(self.bundle_uri)
        schema = self.model.metadata.get_params_schema()
        names = {p.name for p in schema.params} if schema else set()
        self.params = {"pooling": "mean", "normalize": True} if "pooling" in names else None

    def call(self, records: list[str]) -> None:
        self.model.predict(records, params=self.params)


class MlflowServeTarget(Target):
    """`mlflow models serve` of the source model (REST scoring server), over HTTP."""

    def __init__(self, name: str, source_uri: str):
        self.name, self.source_uri = name, source_uri

    def start(self) -> None:
        import requests

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            self.source_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        # mlflow execs `uvicorn` from PATH: make it this interpreter's, even when the venv is not activated.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env
        )
        self.url = f"http://127.0.0.1:{port}/invocations"
        self.session = requests.Session()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.5)
            if self.proc.poll() is not None:
                raise RuntimeError("mlflow models serve exited before it was ready")
        raise RuntimeError("mlflow models serve was not ready within 180 s")

    def call(self, records: list[str]) -> None:
        response = self.session.post(self.url, json={"inputs": records}, timeout=120)
        response.raise_for_status()

    def processes(self) -> dict[str, list[int]]:
        import psutil

        return {
            "mlflow serve": [self.proc.pid, *(c.pid for c in psutil.Process(self.proc.pid).children(recursive=True))]
        }

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def run_point(
    target: Target, texts: list[str], concurrency: int, batch_size: int, seconds: float, min_requests: int
) -> Point:
    """Closed-loop load: `concurrency` threads each send requests of `batch_size` records back to back."""
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
            if time.perf_counter() >= stop_at and i >= min_requests:
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
    cpu = {g: (sum(cpu_seconds(p) for p in pids) - cpu_before[g]) / max(records, 1) for g, pids in groups.items()}
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


# ----------------------------------------------------------------------------- reports


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


def headline(
    points: list[Point], concurrency: tuple[int, ...], batch_sizes: tuple[int, ...]
) -> dict[str, float | None]:
    """The ratios the project's targets are stated in."""
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
    }
    out = {f"{name}_c{cmax}_b{bmax}": ratio(points, a, b, cmax, bmax) for name, (a, b) in pairs.items()}
    p1 = {
        p.target: p.p50_ms
        for p in points
        if p.concurrency == 1 and p.batch_size == min(batch_sizes) and p.request_set == "docstrings"
    }
    for name, target in (("gateway", "gateway-onnx-fp32"), ("gateway_inline", "gateway-onnx-fp32-inline")):
        if target in p1 and "pyfunc-in-process" in p1:
            out[f"{name}_added_p50_ms_c1_b1"] = round(p1[target] - p1["pyfunc-in-process"], 3)
    return out


def markdown(points: list[Point], summaries: list[TargetSummary], heads: dict[str, float | None], command: str) -> str:
    lines = [
        "# splitserve bench",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "",
        "## Headline ratios (throughput, same run, same requests)",
        "",
        "| ratio | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in heads.items()),
        "",
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


# ----------------------------------------------------------------------------- the command

ALL_TARGETS = (
    "gateway-onnx-fp32",
    "gateway-onnx-int8",
    "gateway-torch",
    "gateway-onnx-fp32-inline",
    "model-tier-onnx-fp32",
    "model-tier-onnx-int8",
    "model-tier-torch",
    "pipeline-in-process",
    "pyfunc-in-process",
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
) -> dict[str, Any]:
    import mlflow
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from splitserve.export import export_bundle
    from splitserve.source import log_pipeline

    console = Console(stderr=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    if source_uri is None:
        console.print("Logging the bundled all-MiniLM-L6-v2 as the source model")
        source_uri = log_pipeline(None, "feature-extraction", None)
    names = targets or ALL_TARGETS
    unknown = sorted(set(names) - set(ALL_TARGETS))
    if unknown:
        raise ValueError(f"unknown bench target(s) {unknown}; known: {list(ALL_TARGETS)}")
    console.print(f"Exporting the serving bundle(s) of {source_uri}")
    fp32 = export_bundle(source_uri, name="bench-fp32", show_progress=False)
    int8 = (
        export_bundle(source_uri, name="bench-int8", quantize="int8", show_progress=False)
        if {"gateway-onnx-int8", "model-tier-onnx-int8"} & set(names)
        else ""
    )
    available: dict[str, Target] = {
        t.name: t
        for t in (
            GatewayTarget("gateway-onnx-fp32", fp32, "onnx"),
            GatewayTarget("gateway-onnx-int8", int8, "onnx"),
            GatewayTarget("gateway-torch", fp32, "torch"),
            GatewayTarget("gateway-onnx-fp32-inline", fp32, "onnx", inline_stages=True),
            ModelTierTarget("model-tier-onnx-fp32", fp32, "onnx"),
            ModelTierTarget("model-tier-onnx-int8", int8, "onnx"),
            ModelTierTarget("model-tier-torch", fp32, "torch"),
            PipelineTarget("pipeline-in-process", source_uri),
            PyfuncTarget("pyfunc-in-process", fp32),
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
                    point = run_point(target, request_sets[request_set], c, b, seconds, min_requests=c * 2)
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
    heads = headline(points, concurrency, batch_sizes)
    report = {
        "command": command,
        "source_uri": source_uri,
        "bundles": {"fp32": fp32, "int8": int8},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "headline": heads,
        "points": [asdict(p) for p in points],
        "targets": [asdict(s) for s in summaries],
        "failed_targets": failed,
    }
    (out_dir / "results.json").write_text(json.dumps(report, indent=2))
    (out_dir / "results.md").write_text(markdown(points, summaries, heads, command))
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
