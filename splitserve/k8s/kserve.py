"""`splitserve kserve`: one KServe InferenceService whose predictor is the model tier and whose
transformer is the gateway running the preprocess and postprocess stages itself (`--inline-stages`),
so KServe's canary rollouts, payload logger and autoscaling apply.

The predictor is a custom container speaking the Open Inference Protocol over gRPC: its one port is
named `h2c` (KServe routes gRPC to such a port) and `PROTOCOL=v2` tells KServe its
protocol (the CRD's `protocolVersion` field belongs to `predictor.model`, the ServingRuntime form,
not to custom containers). The transformer calls it at its Service, `<name>-predictor`, port 80.
KServe appends `--model_name`, `--predictor_host` and `--http_port` to a transformer's command line;
`serve-gateway` accepts and ignores them. The transformer's gRPC port comes first (its Service's port
80), its REST door second (`--rest-port`, 8080; raw deployment mode exposes every further container
port on the Service at its own number). Raw deployment mode (plain Deployments), so KServe makes
an HPA or, with `--autoscaler keda`, a KEDA ScaledObject per component from `autoScaling`.
"""

from __future__ import annotations

from splitserve.k8s.autoscaling import kserve_scaling
from splitserve.k8s.workloads import (
    POD_SECURITY,
    SCRAPE,
    SCRATCH,
    Obj,
    Options,
    container,
    disruption_budget,
    metadata,
    serve_args,
)

CONTAINER = "kserve-container"
COMPONENTS = {"model": "predictor", "gateway": "transformer"}


def component(o: Options, tier: str, device: str, replicas: int, queue_rows: int) -> Obj:
    pod_prefix = f"{o.name}-{COMPONENTS[tier]}"
    model_address = f"dns:///{o.name}-predictor.{o.namespace}.svc.cluster.local:80"
    args = serve_args(o, tier, device, model_address=model_address, inline=True)
    box = container(o, tier, device, args, name=CONTAINER, port_name="h2c")
    if tier == "model":
        box["env"].append({"name": "PROTOCOL", "value": "v2"})
    return {
        "minReplicas": replicas,
        "maxReplicas": max(o.max_replicas, replicas),
        **kserve_scaling(o, tier, pod_prefix, queue_rows),
        "annotations": SCRAPE,
        "terminationGracePeriodSeconds": 30,
        "securityContext": POD_SECURITY,
        "containers": [box],
        "volumes": SCRATCH,
    }


def manifests(o: Options, device: str, replicas: dict[str, int], queue_rows: int) -> list[Obj]:
    """The InferenceService and a PodDisruptionBudget per component."""
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            **metadata(o, o.name),
            "annotations": {
                "serving.kserve.io/deploymentMode": "RawDeployment",
                "serving.kserve.io/autoscalerClass": o.autoscaler,
            },
        },
        "spec": {
            "predictor": component(o, "model", device, replicas["model"], queue_rows),
            "transformer": component(o, "gateway", device, replicas["gateway"], queue_rows),
        },
    }
    budgets = [
        disruption_budget(
            o,
            f"{o.name}-{part}",
            {"serving.kserve.io/inferenceservice": o.name, "component": part},
            {"app.kubernetes.io/name": o.name, "app.kubernetes.io/component": part},
        )
        for part in COMPONENTS.values()
    ]
    return [isvc, *budgets]
