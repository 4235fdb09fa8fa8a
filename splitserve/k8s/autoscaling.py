"""Autoscalers per tier: CPU HorizontalPodAutoscalers (`--autoscaler hpa`), or KEDA ScaledObjects on
the tiers' own Prometheus metrics (`--autoscaler keda`).

The KEDA queries (per-pod targets: KEDA divides each query's value by its threshold):

| tier | query (summed over the tier's pods) | target per pod |
|---|---|---|
| model | `avg_over_time(splitserve_model_queue_rows[1m])`: rows waiting for inference | the rows one model pod works off in 100 ms (capacity table) |
| preprocess, postprocess | `rate(splitserve_request_seconds_sum{method=...}[1m])`: requests in flight, averaged over the minute | 2 |
| gateway | CPU (KEDA's `cpu` trigger) | 70% |

The preprocess and postprocess tiers run their stage on one event loop, so a pod is one server and
its time-averaged requests in flight L = rho / (1 - rho): 2 in flight is a loop about 67% busy,
whatever a record costs. The gateway's requests spend their time waiting for the other tiers, so
its in-flight count measures them, not it: it scales on CPU.
"""

from __future__ import annotations

from typing import Any

from splitserve.k8s.workloads import Obj, Options, labels, metadata

CPU_TARGET_PERCENT = 70
IN_FLIGHT_TARGET = 2
METHODS = {"preprocess": "Preprocess", "postprocess": "Postprocess"}


def query(o: Options, tier: str, pod_prefix: str) -> str:
    """The Prometheus query KEDA scales `tier` on (none for the gateway: it scales on CPU)."""
    pods = f'namespace="{o.namespace}",pod=~"{pod_prefix}-.*"'
    if tier == "model":
        return f"sum(avg_over_time(splitserve_model_queue_rows{{{pods}}}[1m]))"
    return f'sum(rate(splitserve_request_seconds_sum{{{pods},method="{METHODS[tier]}"}}[1m]))'


def threshold(tier: str, queue_rows: int) -> str:
    return str(queue_rows if tier == "model" else IN_FLIGHT_TARGET)


def hpa(o: Options, tier: str, low: int, high: int) -> Obj:
    name = f"{o.name}-{tier}"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(o, name, labels(o, tier)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT},
                    },
                }
            ],
        },
    }


def scaled_object(o: Options, tier: str, low: int, high: int, queue_rows: int) -> Obj:
    name = f"{o.name}-{tier}"
    trigger: dict[str, Any]
    if tier == "gateway":
        trigger = {"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(CPU_TARGET_PERCENT)}}
    else:
        trigger = {
            "type": "prometheus",
            "metadata": {
                "serverAddress": o.prometheus_url,
                "query": query(o, tier, name),
                "threshold": threshold(tier, queue_rows),
            },
        }
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(o, name, labels(o, tier)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": low,
            "maxReplicaCount": high,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": [trigger],
        },
    }


def kserve_scaling(o: Options, tier: str, pod_prefix: str, queue_rows: int) -> Obj:
    """An InferenceService component's autoscaling fields: KServe makes the HPA or the
    ScaledObject itself (raw deployment mode), from the same metrics and targets."""
    if o.autoscaler == "hpa" or tier == "gateway":
        cpu = {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT}
        return {"autoScaling": {"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": cpu}}]}}
    metric = {"backend": "prometheus", "serverAddress": o.prometheus_url, "query": query(o, tier, pod_prefix)}
    target = {"type": "Value", "value": threshold(tier, queue_rows)}
    return {"autoScaling": {"metrics": [{"type": "External", "external": {"metric": metric, "target": target}}]}}
