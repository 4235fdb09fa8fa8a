"""What every tier's pods look like, on plain Kubernetes and under KServe: the container (its
command line, probes, ports, resources), and per tier a Deployment, a Service and a
PodDisruptionBudget.

The preprocess, model and postprocess Services are headless (`clusterIP: None`): DNS answers with
every ready pod, and the gateway's `dns:///` channels balance round robin over them (with gRPC
health checks and retries), per replica rather than per connection; the tiers close connections
after `--max-connection-age-s` so the gateway re-resolves and reaches pods added since. The
gateway's Service is a normal ClusterIP one, the address clients call. Readiness and liveness are
Kubernetes' native gRPC probes on each tier's `grpc.health.v1` service (NOT_SERVING until its bundle
is loaded): a startup probe gives the bundle's download and load up to STARTUP_S, then liveness
takes over; the gateway's readiness is its REST door's `/health/ready` when that is on (port
REST_PORT, on its Service too). Every tier gets the bundle URI and MLFLOW_TRACKING_URI, and serves
Prometheus metrics; `--env` reaches every pod and `--env-from-secret` every pod that fetches bundles.

Every pod runs restricted (Kubernetes' "restricted" Pod Security Standard): a non-root user (the
image's uid RUN_AS), no privilege escalation, every capability dropped, the runtime's seccomp profile
and a read-only root filesystem, with emptyDir volumes for the bundle cache and /tmp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from splitserve.core.settings import check_bundle_flags
from splitserve.k8s.capacity import POD_CPUS

GRPC_PORT = 7000
METRICS_PORT = 9090
REST_PORT = 8080  # the gateway's REST and OpenAI-compatible door (KServe's transformer HTTP port too)
RUN_AS = 10001  # deploy/Dockerfile's user
CACHE_DIR = "/var/cache/splitserve"  # the bundle cache, an emptyDir
STARTUP_S = 600  # the longest a pod may take to download and load its bundle before it is restarted
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
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
    image: str = ""  # required: splitserve publishes no image (deploy/Dockerfile builds it)
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
    rest_port: int | None = REST_PORT  # the gateway's REST door (None: gRPC only)
    env: tuple[str, ...] = ()  # KEY=VALUE, for every pod
    env_from_secrets: tuple[str, ...] = ()  # Secrets whose keys become env vars of every pod that fetches bundles

    def __post_init__(self) -> None:
        check_bundle_flags(self.bundle_uri, self.bundles, self.watch_alias)  # what the pods would refuse
        if not self.watch_interval_s > 0:
            raise ValueError(f"--watch-interval-s must be above 0, not {self.watch_interval_s}")
        for item in self.env:
            key, sep, _ = item.partition("=")
            if not sep or not ENV_NAME.fullmatch(key):
                raise ValueError(f"--env takes KEY=VALUE (KEY a variable name), not {item!r}")
        for name in self.env_from_secrets:
            if not SECRET_NAME.fullmatch(name):
                raise ValueError(
                    f"--env-from-secret {name!r} is not a Secret's name (lower-case letters, digits, '-' and '.')"
                )
        if self.rest_port is not None and self.rest_port in (GRPC_PORT, METRICS_PORT):
            raise ValueError(f"--rest-port {self.rest_port} is taken by the pods' gRPC or metrics port")

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
        cores = str(max(1, int(POD_CPUS["model"])))
        return [
            "serve-model",
            o.bundle_uri,
            *o.bundle_args(),
            *common,
            "--backend",
            o.backend,
            "--device",
            device,
            # One thread per batch, a batch per CPU under load; every CPU for a batch that runs alone.
            *("--intra-op-threads", "1", "--idle-threads", cores, "--parallel-batches", cores),
        ]
    if tier != "gateway":
        return [f"serve-{tier}", o.bundle_uri, *o.bundle_args(), *common]
    rest = ["--rest-port", str(o.rest_port)] if o.rest_port is not None else []
    if inline:
        return ["serve-gateway", *common, *rest, "--model", model_address, "--inline-stages", o.bundle_uri]
    return [
        "serve-gateway",
        *common,
        *rest,
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
    grpc_probe: Obj = {"grpc": {"port": GRPC_PORT}}
    ports: list[Obj] = [{"name": port_name, "containerPort": GRPC_PORT, "protocol": "TCP"}]
    if port_name == "grpc":  # KServe's predictor keeps one port: metrics are scraped by annotation only
        ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
    readiness: Obj = {**grpc_probe, "periodSeconds": 5}
    if tier == "gateway" and o.rest_port is not None:
        ports.append({"name": "http", "containerPort": o.rest_port, "protocol": "TCP"})
        readiness = {"httpGet": {"path": "/health/ready", "port": "http"}, "periodSeconds": 5}
    image = o.gpu_image if (tier == "model" and device == "cuda" and o.gpu_image) else o.image
    fetches = tier != "gateway" or "--inline-stages" in args  # it downloads bundles: it gets the credentials
    return {
        "name": name or tier,
        "image": image,
        "args": args,
        "ports": ports,
        "env": env(o),
        **(
            {"envFrom": [{"secretRef": {"name": n}} for n in o.env_from_secrets]}
            if fetches and o.env_from_secrets
            else {}
        ),
        # The bundle's download and load may take minutes; liveness starts once the startup probe passed.
        "startupProbe": {**grpc_probe, "periodSeconds": 5, "failureThreshold": STARTUP_S // 5},
        "readinessProbe": readiness,
        "livenessProbe": {**grpc_probe, "periodSeconds": 10, "failureThreshold": 3},
        "resources": resources(tier, device),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "bundle-cache", "mountPath": CACHE_DIR}],
    }


def env(o: Options) -> list[Obj]:
    """Every pod's environment: the tracking server, the bundle cache on its emptyDir, then `--env`
    (which may replace any of them)."""
    pairs = {
        "MLFLOW_TRACKING_URI": o.tracking_uri,
        "HF_HUB_OFFLINE": "1",
        "SPLITSERVE_CACHE_DIR": CACHE_DIR,
        "HF_HOME": "/tmp/huggingface",  # the root filesystem is read-only
    }
    pairs |= dict(item.split("=", 1) for item in o.env)
    return [{"name": k, "value": v} for k, v in pairs.items()]


# The pod's half of the restricted profile (the container's is in `container`) and its writable folders.
POD_SECURITY: Obj = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
SCRATCH: list[Obj] = [{"name": "tmp", "emptyDir": {}}, {"name": "bundle-cache", "emptyDir": {}}]


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
    volumes = SCRATCH + (tier_tls(o, box, tier) if o.tier_tls_secret else [])
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
                    "securityContext": POD_SECURITY,
                    "containers": [box],
                    "volumes": volumes,
                },
            },
        },
    }


def service(o: Options, tier: str) -> Obj:
    spec: Obj = {
        "selector": labels(o, tier),
        "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"}],
    }
    if tier == "gateway" and o.rest_port is not None:  # REST and the OpenAI-compatible routes
        spec["ports"].append({"name": "http", "port": o.rest_port, "targetPort": "http", "appProtocol": "http"})
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
    box["volumeMounts"] = [*box["volumeMounts"], {"name": "tier-tls", "mountPath": TLS_DIR, "readOnly": True}]
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
