"""What `splitserve bench` runs: the targets it knows, the two profiles (the default, a few minutes;
`--full`, the committed figures) and how long a plan should take, for the ETA shown from the start.
Light at import: the CLI's `--help` lists the targets from here."""

from __future__ import annotations

from dataclasses import dataclass

TARGETS = {  # name: what it is (for --help)
    "gateway-onnx-fp32": "all tiers via `splitserve up`, model tier on ONNX fp32",
    "gateway-onnx-int8": "the same, ONNX int8",
    "gateway-torch": "the same, model tier on PyTorch",
    "gateway-onnx-fp32-inline": "the gateway with inline stages, model tier on ONNX fp32",
    "gateway-onnx-int8-inline": "the same, ONNX int8",
    "gateway-cache-0": "the gateway's response cache on (--cache-bytes), no record repeated (all misses)",
    "gateway-cache-50": "the same, half the records repeated (hits)",
    "gateway-cache-90": "the same, 90% of the records repeated",
    "model-tier-onnx-fp32": "one model-tier replica alone over OIP, ONNX fp32",
    "model-tier-onnx-int8": "the same, ONNX int8",
    "model-tier-torch": "the same, PyTorch fp32",
    "model-tier-torch-bf16": "the same, PyTorch bf16",
    "pipeline-in-process": "transformers.pipeline in the bench's process",
    "pyfunc-in-process": "the bundle's pyfunc in the bench's process",
    "pyfunc-in-process-int8": "the same, ONNX int8",
    "mlflow-models-serve": "`mlflow models serve` of the source model, over HTTP",
}
# The int8 bundle the bench measures (`int8_gate`): "fast" accepts 0.85 top-1 and 0.9 lowest cosine,
# so that MiniLM's fastest two candidates (static QDQ, dynamic 7-bit: 0.86-0.93 of its nearest
# neighbours, lowest cosine 0.92-0.94; benchmarks/int8-candidates.md) pass; "default" is the
# export's own gate (0.97 top-1), which MiniLM passes only blockwise, at about 1.2-1.4x fp32.
# The bundle's `int8_check` says what it agrees on.
INT8_GATES: dict[str, dict[str, float] | None] = {"fast": {"top1_agreement": 0.85, "min_cosine": 0.9}, "default": None}
ALL_TARGETS = tuple(TARGETS)
REQUEST_SETS = ("docstrings", "fixed-24-words")


@dataclass(frozen=True)
class Profile:
    targets: tuple[str, ...]
    concurrency: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    seconds: float
    repeats: int
    request_sets: tuple[str, ...] = REQUEST_SETS
    roofline: bool = True  # measure the machine's GEMM roofs and each point's fraction of them


# The default: the headline comparison (split tiers on ONNX and on PyTorch, the bundle in process,
# `mlflow models serve`) on the docstrings, in a few minutes. `--full`: every target on both request
# sets, with the roofline, as the committed figures were made (`benchmarks/minilm-2cpu`).
DEFAULT = Profile(
    ("gateway-onnx-fp32", "gateway-torch", "pyfunc-in-process", "mlflow-models-serve"),
    (1, 16),
    (1, 8),
    1.5,
    1,
    ("docstrings",),
    roofline=False,
)
FULL = Profile(ALL_TARGETS, (1, 16), (1, 8), 3.0, 3)

# Seconds on this project's 2-core machine, for the estimate (the ETA then scales by what was
# measured): a target's start (first match), logging and exporting MiniLM, the report.
START_S = {
    "gateway-torch": 60.0,  # two model replicas loading PyTorch
    "gateway": 20.0,
    "model-tier-torch": 25.0,
    "model-tier": 10.0,
    "pipeline": 15.0,
    "pyfunc": 5.0,
    "mlflow": 30.0,
}
LOG_S, EXPORT_S, INT8_S, FINISH_S, ROOFLINE_S = 30.0, 30.0, 60.0, 8.0, 10.0
POINT_OVERHEAD_S = 1.5  # per run of a point: its threads, at least 2 requests per thread, the slowest's tail


def check_request_sets(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in REQUEST_SETS]
    if unknown:
        raise ValueError(f"no request set {', '.join(unknown)}; the request sets are {', '.join(REQUEST_SETS)}")
    return names


def check_targets(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The named targets, or ValueError naming the unknown ones and listing the known."""
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ValueError(f"--targets: no target {', '.join(unknown)}; the targets are {', '.join(ALL_TARGETS)}")
    return tuple(dict.fromkeys(names))


def points_of(
    concurrency: tuple[int, ...], batch_sizes: tuple[int, ...], request_sets: tuple[str, ...] = REQUEST_SETS
) -> list[tuple[str, int, int]]:
    """(request set, concurrency, batch size) of every point a target runs: the docstrings at every
    concurrency and batch size, the fixed-length set (if run) at the largest of both."""
    return [
        (rs, c, b)
        for rs in request_sets
        for c in concurrency
        for b in batch_sizes
        if rs == "docstrings" or (c == max(concurrency) and b == max(batch_sizes))
    ]


def start_s(target: str) -> float:
    """A target's start and warm-up."""
    return next((s for prefix, s in START_S.items() if target.startswith(prefix)), 10.0) + 2.0


def point_s(seconds: float, repeats: int) -> float:
    return repeats * (seconds + POINT_OVERHEAD_S)


def setup_s(targets: tuple[str, ...], log_source: bool) -> float:
    """Logging the source model and exporting the bundle(s)."""
    return (LOG_S if log_source else 0.0) + EXPORT_S + (INT8_S if any("int8" in t for t in targets) else 0.0)


def estimate_s(
    targets: tuple[str, ...], points: int, seconds: float, repeats: int, log_source: bool, roofline: bool = True
) -> float:
    """Seconds the whole run should take: logging and exporting, each target's start and points, the report."""
    work = sum(start_s(t) + points * point_s(seconds, repeats) for t in targets)
    return setup_s(targets, log_source) + work + finish_s(roofline)


def finish_s(roofline: bool) -> float:
    return FINISH_S + (ROOFLINE_S if roofline else 0.0)


def profile_s(profile: Profile) -> float:
    """The estimate of a profile's whole run, the source model logged and exported first."""
    points = len(points_of(profile.concurrency, profile.batch_sizes, profile.request_sets))
    return estimate_s(profile.targets, points, profile.seconds, profile.repeats, True, profile.roofline)


def clock(seconds: float) -> str:
    """`75.0` -> `1m15s`."""
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
