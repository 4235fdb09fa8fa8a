"""The capacity table: from a bench run's CPU-seconds per record of each tier, how many pods of each
CPU tier one model pod keeps busy. `splitserve bench` writes it into its results;
`splitserve k8s` / `splitserve kserve` size the tiers with it (the committed `capacity.json`,
derived from `benchmarks/minilm-2cpu`, unless `--capacity` names another bench's results).

For each tier, pods per model pod = (records/s one model pod serves) x (CPU-s per record of the
tier) / (CPUs of one tier pod). A model pod on CPU serves its CPUs / its CPU-s per record (the
bench's best, batched, point); on a GPU, what the bench measured it serving. The CPU tiers' cost is
their worst point at the highest concurrency (single records: per-request overhead dominates), so
the ratio errs towards more CPU pods. The inline gateway (`--inline-stages`, KServe's transformer)
has its own row, from the bench's inline target.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# CPU requested by one pod of each tier (workloads.resources asks for these). A model pod is one
# CPU running one intra-op thread (`--intra-op-threads 1`): on the 2-core bench machine two
# 1-thread replicas served 5-20% more than one 2-thread replica (MiniLM, 16 x 8), so the model tier
# scales out in 1-CPU pods (two by default) rather than up.
POD_CPUS = {"preprocess": 0.5, "model": 1.0, "postprocess": 0.5, "gateway": 0.5}
MODEL_PODS = 2  # model replicas when --replicas does not say
CPU_TIERS = ("preprocess", "postprocess", "gateway")
THREE_TIERS_TARGET = "gateway-onnx-fp32"
INLINE_TARGET = "gateway-onnx-fp32-inline"
INLINE = "gateway-inline"  # the row of a gateway running the preprocess and postprocess stages itself
# KEDA's target for the model tier's queue: rows that take a model pod this long to work off.
QUEUE_TARGET_S = 0.1
DEFAULT_FILE = Path(__file__).with_name("capacity.json")


def _top_points(points: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    mine = [p for p in points if p["target"] == target and p.get("request_set", "docstrings") == "docstrings"]
    if not mine:
        return []
    top = max(p["concurrency"] for p in mine)
    return [p for p in mine if p["concurrency"] == top and p["cpu_s_per_record"].get("model")]


def capacity_table(points: list[dict[str, Any]], device: str = "cpu") -> dict[str, Any]:
    """The table for one device from a bench run's points (`results.json` "points")."""
    three = _top_points(points, THREE_TIERS_TARGET)
    if not three:
        raise ValueError(f"the bench results have no {THREE_TIERS_TARGET} points: run the bench with that target")
    cost = {t: max(p["cpu_s_per_record"][t] for p in three) for t in CPU_TIERS}
    cost["model"] = min(p["cpu_s_per_record"]["model"] for p in three)
    inline = _top_points(points, INLINE_TARGET)
    if inline:
        cost[INLINE] = max(p["cpu_s_per_record"]["gateway"] for p in inline)
    if device == "cpu":
        records_per_s = POD_CPUS["model"] / cost["model"]
    else:  # the accelerator, not the CPUs, bounds a GPU model pod: take what it served
        records_per_s = max(p["throughput_rps"] for p in three + inline)
    pods = {t: cost[t] * records_per_s / POD_CPUS["gateway" if t == INLINE else t] for t in cost if t != "model"}
    return {
        "device": device,
        "concurrency": three[0]["concurrency"],
        "cpu_s_per_record": {t: round(v, 6) for t, v in cost.items()},
        "pod_cpus": POD_CPUS,
        "model_pod_records_per_s": round(records_per_s, 1),
        "pods_per_model_pod": {t: round(v, 3) for t, v in pods.items()},
    }


def from_bench(results: dict[str, Any], source: str = "") -> dict[str, Any]:
    """The capacity table of a bench's `results.json`, computed from its points with today's pod
    sizes (POD_CPUS), whatever the table the bench wrote then."""
    return {"source": source or results.get("command", ""), **tables(results["points"], results.get("device", "cpu"))}


def tables(points: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """{"cpu" or "gpu": the table} of a bench run's points on `device` ("cpu" or "cuda")."""
    return {("gpu" if device == "cuda" else "cpu"): capacity_table(points, device)}


def load(path: str | Path | None = None) -> dict[str, Any]:
    """A capacity file: `capacity.json` as committed, or any bench's `results.json`."""
    file = Path(path) if path else DEFAULT_FILE
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the capacity file {file}: {exc.strerror}") from None
    except ValueError:
        raise ValueError(f"{file} is not JSON") from None
    if "points" in data:  # a bench's results.json
        data = from_bench(data, source=str(file))
    if "cpu" not in data and "gpu" in data and path:  # a GPU bench: the CPU overlay keeps the committed table
        data = {**load(), **data}
    if "cpu" not in data:
        raise ValueError(f"{file} has no capacity table (a bench's results.json, or a capacity.json)")
    return data


def table_for(capacity: dict[str, Any], device: str) -> dict[str, Any]:
    """The device's table; without a GPU measurement the CPU one (the GPU overlay says so)."""
    return capacity.get(device) or capacity["cpu"]


def replicas_for(capacity: dict[str, Any], device: str, model_replicas: int, tiers: tuple[str, ...]) -> dict[str, int]:
    """Pods of each of `tiers` that `model_replicas` model pods keep busy (at least one each)."""
    pods = table_for(capacity, device)["pods_per_model_pod"]
    return {t: max(1, math.ceil(model_replicas * pods[t] - 1e-9)) for t in tiers}


def queue_target_rows(capacity: dict[str, Any], device: str) -> int:
    """KEDA's per-pod target for the model tier's queued rows: QUEUE_TARGET_S of one pod's work."""
    return max(1, round(QUEUE_TARGET_S * table_for(capacity, device)["model_pod_records_per_s"]))


def capacity_markdown(tables: dict[str, Any]) -> str:
    """The bench report's section for its capacity table(s)."""
    lines = []
    for device, t in tables.items():
        cost = ", ".join(f"{k}: {v * 1000:.2f} ms" for k, v in t["cpu_s_per_record"].items())
        pods = ", ".join(f"{k}: {v}" for k, v in t["pods_per_model_pod"].items())
        lines += [
            "",
            f"## Capacity ({device}): pods per model pod",
            "",
            f"CPU-s per record at concurrency {t['concurrency']}: {cost}. One model pod "
            f"({t['pod_cpus']['model']} CPUs) serves {t['model_pod_records_per_s']} records/s; pods of each tier "
            f"it keeps busy ({t['pod_cpus']['preprocess']} CPU each): {pods}.",
        ]
    return "\n".join(lines) + ("\n" if lines else "")
