"""What every tier's pods look like, on plain Kubernetes and under KServe: the container (its
command line, probes, ports, resources), and per tier a Deployment, a Service and a
PodDisruptionBudget.

The preprocess, model and postprocess Services are headless (`clusterIP: None`): DNS answers with
every ready pod, and the gateway's `dns:///` channels balance round robin over them (with gRPC
health checks and retries), per replica rather than per connection; the tiers close connections
after `--max-connection-age-s` so the gateway re-resolves and reaches pods added since. The
gateway's Service is a normal ClusterIP one, the address clients call. Readiness and liveness are
Kubernetes' native gRPC probes on each tier's `grpc.health.v1` service (NOT_SERVING until its bundle
is loaded). Every tier gets the bundle URI and MLFLOW_TRACKING_URI, and serves Prometheus metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from splitserve.core.settings import check_bundle_flags
from splitserve.k8s.capacity import POD_CPUS

GRPC_PORT = 7000
METRICS_PORT = 9090
TIERS = ("preprocess", "model", "postprocess", "gateway")
TLS_DIR = "/etc/splitserve/tls"
MEMORY = {"preprocess": ("256Mi", "512Mi"), "model": ("1Gi", "4Gi"), "postprocess": ("256Mi", "512Mi")}
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
Obj = dict[str, Any]


@dataclass(frozen=True)
class Options:
    """What `splitserve k8s` and `splitserve kserve` are given (their flags)."""

    bundle_uri: str
    tracking_uri: str
    image: str = "splitserve:latest"
    gpu_image: str | None = None  # the model pods' image on the GPU overlay (default: `image`)
    name: str = "splitserve"
    namespace: str = "default"
    replicas: dict[str, int] = field(default_factory=dict)  # initial and minimum, per tier
    max_replicas: int = 10
    backend: str = "onnx"
    autoscaler: str = "hpa"  # or "keda"
    prometheus_url: str = DEFAULT_PROMETHEUS
    # A TLS Secret (`ca.crt`, `tls.crt`, `tls.key`, as cert-manager writes them) for mutual TLS
    # between the gateway and the tiers; its certificate must name `<name>-tier`.
    tier_tls_secret: str | None = None
    # More bundles beside `bundle_uri` (NAME=URI each, as `serve-* --bundle`), and whether every
    # tier follows the registry alias of each URI (`--watch-alias`: zero-error rollouts).
    bundles: tuple[str, ...] = ()
    watch_alias: bool = False
    watch_interval_s: float = 10.0

    def __post_init__(self) -> None:
        check_bundle_flags(self.bundle_uri, self.bundles, self.watch_alias)  # what the pods would refuse
        if not self.watch_interval_s > 0:
            raise ValueError(f"--watch-interval-s must be above 0, not {self.watch_interval_s}")

    def bundle_args(self) -> list[str]:
        """The flags every preprocess, model and postprocess replica takes besides its bundle URI."""
        out = ["--watch-alias", "--watch-interval-s", repr(self.watch_interval_s)] if self.watch_alias else []
        return out + (["--bundle", *self.bundles] if self.bundles else [])


def resources(tier: str, device: str) -> Obj:
    request, limit = MEMORY.get(tier, MEMORY["preprocess"])
    cpu = POD_CPUS[tier]
    out: Obj = {
        "requests": {"cpu": f"{int(cpu * 1000)}m" if cpu < 1 else str(int(cpu)), "memory": request},
        "limits": {"memory": limit},
    }
    if tier == "model" and device == "cuda":
        out["limits"]["nvidia.com/gpu"] = 1
    return out


def serve_args(o: Options, tier: str, device: str, model_address: str = "", inline: bool = False) -> list[str]:
    """The container's command line (the image's entrypoint is `splitserve`)."""
    common = ["--host", "0.0.0.0", "--port", str(GRPC_PORT), "--metrics-port", str(METRICS_PORT)]
    if tier == "model":  # threads as the pod's CPUs: os.cpu_count() in a container is the node's
        threads = str(max(1, int(POD_CPUS["model"])))
        return [
            "serve-model",
            o.bundle_uri,
            *o.bundle_args(),
            *common,
            "--backend",
            o.backend,
            "--device",
            device,
            "--intra-op-threads",
            threads,
        ]
    if tier != "gateway":
        return [f"serve-{tier}", o.bundle_uri, *o.bundle_args(), *common]
    if inline:
        return ["serve-gateway", *common, "--model", model_address, "--inline-stages", o.bundle_uri]
    return [
        "serve-gateway",
        *common,
        "--preprocess",
        service_address(o, "preprocess"),
        "--model",
        service_address(o, "model"),
        "--postprocess",
        service_address(o, "postprocess"),
    ]


def service_address(o: Options, tier: str, port: int = GRPC_PORT, service: str = "") -> str:
    return f"dns:///{service or f'{o.name}-{tier}'}.{o.namespace}.svc.cluster.local:{port}"


def container(o: Options, tier: str, device: str, args: list[str], name: str = "", port_name: str = "grpc") -> Obj:
    probe: Obj = {"grpc": {"port": GRPC_PORT}, "periodSeconds": 5}
    ports: list[Obj] = [{"name": port_name, "containerPort": GRPC_PORT, "protocol": "TCP"}]
    if port_name == "grpc":  # Knative (KServe) allows one port: metrics are scraped by annotation only
        ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
    image = o.gpu_image if (tier == "model" and device == "cuda" and o.gpu_image) else o.image
    return {
        "name": name or tier,
        "image": image,
        "args": args,
        "ports": ports,
        "env": [
            {"name": "MLFLOW_TRACKING_URI", "value": o.tracking_uri},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
        ],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "initialDelaySeconds": 120, "failureThreshold": 3},
        "resources": resources(tier, device),
    }


def labels(o: Options, tier: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": o.name, "app.kubernetes.io/component": tier}


def metadata(o: Options, name: str, tier_labels: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": o.namespace}
    if tier_labels:
        meta["labels"] = tier_labels
    return meta


SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}


def deployment(o: Options, tier: str, device: str, replicas: int) -> Obj:
    tier_labels = labels(o, tier)
    box = container(o, tier, device, serve_args(o, tier, device))
    volumes = tier_tls(o, box, tier) if o.tier_tls_secret else []
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(o, f"{o.name}-{tier}", tier_labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": tier_labels},
            "template": {
                "metadata": {"labels": tier_labels, "annotations": SCRAPE},
                # SIGTERM drains in-flight work for --grace-s (10 s) before the pod goes.
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [box],
                    **({"volumes": volumes} if volumes else {}),
                },
            },
        },
    }


def service(o: Options, tier: str) -> Obj:
    spec: Obj = {
        "selector": labels(o, tier),
        "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"}],
    }
    if tier != "gateway":
        spec["clusterIP"] = "None"  # headless: the gateway balances per pod
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(o, f"{o.name}-{tier}", labels(o, tier)),
        "spec": spec,
    }


def disruption_budget(o: Options, name: str, selector: dict[str, str], tier_labels: dict[str, str]) -> Obj:
    """At most one pod of the tier down at a time for voluntary disruptions (node drains,
    upgrades); a one-pod tier can still be drained."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(o, name, tier_labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }


def tier_tls(o: Options, box: Obj, tier: str) -> list[Obj]:
    """Mount the Secret and turn on mutual TLS: a tier serves it and accepts only certificates the
    Secret's CA signed; the gateway presents the Secret's certificate to the tiers. Returns the volumes."""
    files = {k: f"{TLS_DIR}/{k}" for k in ("ca.crt", "tls.crt", "tls.key")}
    if tier == "gateway":
        flags = ["--tier-tls-ca", files["ca.crt"], "--tier-tls-cert", files["tls.crt"], "--tier-tls-key"]
        flags += [files["tls.key"], "--tier-tls-server-name", f"{o.name}-tier"]
    else:
        flags = ["--tls-cert", files["tls.crt"], "--tls-key", files["tls.key"], "--tls-client-ca", files["ca.crt"]]
    box["args"] = [*box["args"], *flags]
    box["volumeMounts"] = [{"name": "tier-tls", "mountPath": TLS_DIR, "readOnly": True}]
    return [{"name": "tier-tls", "secret": {"secretName": o.tier_tls_secret}}]


def network_policies(o: Options) -> list[Obj]:
    """The preprocess, model and postprocess pods take gRPC calls from the gateway's pods only (they
    trust their callers: never expose them); their metrics port stays open to Prometheus."""
    policies = []
    for tier in TIERS[:-1]:
        spec = {
            "podSelector": {"matchLabels": labels(o, tier)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": labels(o, "gateway")}}], "ports": [{"port": "grpc"}]},
                {"ports": [{"port": "metrics"}]},
            ],
        }
        meta = metadata(o, f"{o.name}-{tier}", labels(o, tier))
        policies.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec})
    return policies
