"""`splitserve k8s`: Kubernetes manifests for one serving bundle, a Deployment, a Service and a
HorizontalPodAutoscaler per tier.

The preprocess, model and postprocess Services are headless (`clusterIP: None`): DNS answers with
every ready pod, and the gateway's `dns:///` channels balance round robin over them (with gRPC
health checks and retries), per replica rather than per connection. The gateway's Service is a
normal ClusterIP one, the address clients call. Readiness and liveness use Kubernetes' native gRPC
probes on the standard `grpc.health.v1` service each tier serves (NOT_SERVING until its bundle is
loaded). Every tier gets the bundle URI and MLFLOW_TRACKING_URI, and exposes Prometheus metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GRPC_PORT = 7000
METRICS_PORT = 9090
TIERS = ("preprocess", "model", "postprocess", "gateway")
TLS_DIR = "/etc/splitserve/tls"
# Requests and limits per tier: the CPU tiers are small; the model tier is what needs sizing.
RESOURCES = {
    "preprocess": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    "postprocess": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    "gateway": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    "model": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
}


def manifests(
    bundle_uri: str,
    image: str,
    tracking_uri: str,
    name: str = "splitserve",
    namespace: str = "default",
    replicas: dict[str, int] | None = None,
    max_replicas: int = 10,
    backend: str = "onnx",
    device: str = "cpu",
    tier_tls_secret: str | None = None,
) -> list[dict[str, Any]]:
    """Every object, as plain dicts (`to_yaml` writes them). `tier_tls_secret`: a TLS Secret
    (`ca.crt`, `tls.crt`, `tls.key`, as cert-manager writes them) for mutual TLS between the gateway
    and the tiers; its certificate must name `<name>-tier`."""
    counts = {tier: 1 for tier in TIERS} | (replicas or {})

    def address(tier: str) -> str:
        return f"dns:///{name}-{tier}.{namespace}.svc.cluster.local:{GRPC_PORT}"

    common = ["--host", "0.0.0.0", "--port", str(GRPC_PORT), "--metrics-port", str(METRICS_PORT)]
    args = {
        "preprocess": ["serve-preprocess", bundle_uri, *common],
        "postprocess": ["serve-postprocess", bundle_uri, *common],
        "model": ["serve-model", bundle_uri, *common, "--backend", backend, "--device", device],
        "gateway": [
            "serve-gateway",
            *common,
            "--preprocess",
            address("preprocess"),
            "--model",
            address("model"),
            "--postprocess",
            address("postprocess"),
        ],
    }
    out: list[dict[str, Any]] = []
    for tier in TIERS:
        full = f"{name}-{tier}"
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": tier}
        meta = {"name": full, "namespace": namespace, "labels": labels}
        probe: dict[str, Any] = {"grpc": {"port": GRPC_PORT}, "periodSeconds": 5}
        resources: dict[str, Any] = RESOURCES[tier]
        if tier == "model" and device == "cuda":
            resources = {**resources, "limits": {**resources["limits"], "nvidia.com/gpu": 1}}
        container = {
            "name": tier,
            "image": image,
            "args": args[tier],
            "ports": [
                {"name": "grpc", "containerPort": GRPC_PORT},
                {"name": "metrics", "containerPort": METRICS_PORT},
            ],
            "env": [
                {"name": "MLFLOW_TRACKING_URI", "value": tracking_uri},
                {"name": "HF_HUB_OFFLINE", "value": "1"},
            ],
            "readinessProbe": probe,
            "livenessProbe": {**probe, "initialDelaySeconds": 120, "failureThreshold": 3},
            "resources": resources,
        }
        volumes = _tier_tls(container, tier, tier_tls_secret, name) if tier_tls_secret else []
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "replicas": counts[tier],
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {
                            "labels": labels,
                            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)},
                        },
                        # SIGTERM drains in-flight work for --grace-s (10 s) before the pod goes.
                        "spec": {
                            "terminationGracePeriodSeconds": 30,
                            "containers": [container],
                            **({"volumes": volumes} if volumes else {}),
                        },
                    },
                },
            }
        )
        service_spec: dict[str, Any] = {
            "selector": labels,
            "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"}],
        }
        if tier != "gateway":
            service_spec["clusterIP"] = "None"  # headless: the gateway balances per pod
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": service_spec})
        out.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": meta,
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": full},
                    "minReplicas": counts[tier],
                    "maxReplicas": max(max_replicas, counts[tier]),
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                        }
                    ],
                },
            }
        )
    return out + network_policies(name, namespace)


def _tier_tls(container: dict[str, Any], tier: str, secret: str, name: str) -> list[dict[str, Any]]:
    """Mount the Secret and turn on mutual TLS: a tier serves it and accepts only certificates the
    Secret's CA signed; the gateway presents the Secret's certificate to the tiers. Returns the volumes."""
    files = {k: f"{TLS_DIR}/{k}" for k in ("ca.crt", "tls.crt", "tls.key")}
    if tier == "gateway":
        flags = ["--tier-tls-ca", files["ca.crt"], "--tier-tls-cert", files["tls.crt"], "--tier-tls-key"]
        flags += [files["tls.key"], "--tier-tls-server-name", f"{name}-tier"]
    else:
        flags = ["--tls-cert", files["tls.crt"], "--tls-key", files["tls.key"], "--tls-client-ca", files["ca.crt"]]
    container["args"] = [*container["args"], *flags]
    container["volumeMounts"] = [{"name": "tier-tls", "mountPath": TLS_DIR, "readOnly": True}]
    return [{"name": "tier-tls", "secret": {"secretName": secret}}]


def network_policies(name: str, namespace: str) -> list[dict[str, Any]]:
    """The preprocess, model and postprocess pods take gRPC calls from the gateway's pods only (they
    trust their callers: never expose them); their metrics port stays open to Prometheus."""
    gateway = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "gateway"}
    policies = []
    for tier in TIERS[:-1]:
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": tier}
        spec = {
            "podSelector": {"matchLabels": labels},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": gateway}}], "ports": [{"port": "grpc"}]},
                {"ports": [{"port": "metrics"}]},
            ],
        }
        meta = {"name": f"{name}-{tier}", "namespace": namespace, "labels": labels}
        policies.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec})
    return policies


def to_yaml(objects: list[dict[str, Any]]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)


def write(objects: list[dict[str, Any]], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_yaml(objects))
    return out
