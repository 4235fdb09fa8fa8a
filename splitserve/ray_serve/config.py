"""What `splitserve ray` writes: a Ray Serve config (`serve deploy`-able: the application of
`splitserve.ray_serve.app:build` with its per-deployment replicas, autoscaling and resources) and a
KubeRay `RayService` manifest embedding it (`spec.serveConfigV2`). Plain data: no Ray import.

Autoscaling is Serve's, on ongoing requests per replica (`target_ongoing_requests`). Each tier
scales between its own min and max; without `--replicas`, the CPU tiers' ceilings are what the
model tier's ceiling keeps busy by the capacity table (`splitserve.k8s.capacity`, the bench's
CPU-seconds per record of each tier), as the Kubernetes manifests size them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from splitserve.k8s import capacity

TIERS = ("preprocess", "model", "postprocess", "gateway")
APP_IMPORT_PATH = "splitserve.ray_serve.app:build"
GRPC_SERVICER = "splitserve.ray_serve.proxy.add_gateway_servicer"
RAY_VERSION = "2.60.0"
# Ongoing requests per replica that Serve's autoscaler aims at: the model tier batches the requests
# it holds at once (its dynamic batcher), so it is given more than the CPU tiers.
TARGET_ONGOING = {"preprocess": 2.0, "model": 4.0, "postprocess": 2.0, "gateway": 8.0}
# What the gateway's settings name as each tier's replicas: Serve routes the calls (one "address"
# per tier, so the gateway asks each tier's version once per refresh).
SERVE_ROUTED = ["ray-serve"]
# CPUs Ray reserves for one replica (the Kubernetes pods' sizes, `capacity.POD_CPUS`).
NUM_CPUS = dict(capacity.POD_CPUS)


@dataclass
class Scaling:
    """One deployment's replicas and resources."""

    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: float = 2.0
    num_cpus: float = 0.5
    num_gpus: float = 0.0


@dataclass
class RayOptions:
    bundle_uri: str
    name: str = "splitserve"
    scaling: dict[str, Scaling] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # per tier: its settings' fields
    env: dict[str, str] = field(default_factory=dict)  # every replica's environment
    http_host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 9000
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 30.0
    look_back_s: float = 30.0  # the window Serve averages ongoing requests over
    image: str = ""
    namespace: str = "default"


def default_scaling(max_model: int = 4, device: str = "cpu") -> dict[str, Scaling]:
    """Each tier's replicas and resources: the CPU tiers' ceilings from the capacity table."""
    cpu_tiers = ("preprocess", "postprocess", "gateway")
    ceilings = capacity.replicas_for(capacity.load(), device, max_model, cpu_tiers)
    return {
        t: Scaling(
            min_replicas=1,
            max_replicas=max_model if t == "model" else ceilings[t],
            target_ongoing_requests=TARGET_ONGOING[t],
            num_cpus=NUM_CPUS[t],
        )
        for t in TIERS
    }


def deployment(name: str, s: Scaling, options: RayOptions) -> dict[str, Any]:
    actor: dict[str, Any] = {"num_cpus": s.num_cpus}
    if s.num_gpus:
        actor["num_gpus"] = s.num_gpus
    return {
        "name": name,
        "max_ongoing_requests": max(8, int(4 * s.target_ongoing_requests)),
        "autoscaling_config": {
            "min_replicas": s.min_replicas,
            "initial_replicas": s.min_replicas,
            "max_replicas": s.max_replicas,
            "target_ongoing_requests": s.target_ongoing_requests,
            "upscale_delay_s": options.upscale_delay_s,
            "downscale_delay_s": options.downscale_delay_s,
            "look_back_period_s": options.look_back_s,
        },
        "ray_actor_options": actor,
        "health_check_period_s": 2,
        "health_check_timeout_s": 10,
        "graceful_shutdown_timeout_s": 5,
    }


def serve_config(options: RayOptions) -> dict[str, Any]:
    """The Serve config (`serve deploy FILE`; KubeRay's `serveConfigV2`)."""
    scaling = {**default_scaling(), **options.scaling}
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": options.http_host, "port": options.http_port},
        "grpc_options": {"port": options.grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]},
        "applications": [
            {
                "name": options.name,
                "route_prefix": "/",
                "import_path": APP_IMPORT_PATH,
                "runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "1", **options.env}},
                "args": {"bundle_uri": options.bundle_uri, "settings": options.settings},
                "deployments": [deployment(t, scaling[t], options) for t in TIERS],
            }
        ],
    }


def container(name: str, image: str, cpus: str, ports: list[tuple[str, int]], gpus: float = 0) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": cpus, "memory": "4Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = str(int(gpus) if float(gpus).is_integer() else gpus)
    return {
        "name": name,
        "image": image,
        "resources": {"requests": {"cpu": cpus, "memory": "2Gi"}, "limits": limits},
        "ports": [{"name": n, "containerPort": p} for n, p in ports],
    }


def ray_service(options: RayOptions, config: dict[str, Any]) -> dict[str, Any]:
    """KubeRay's RayService: a Ray cluster (a head that runs no replicas, autoscaled CPU workers, and
    GPU workers when the model tier asks for GPUs) serving the Serve config."""
    scaling = {**default_scaling(), **options.scaling}
    cpus = sum(scaling[t].max_replicas * scaling[t].num_cpus for t in TIERS if not scaling[t].num_gpus)
    workers = [
        {
            "groupName": "cpu",
            "replicas": 1,
            "minReplicas": 1,
            "maxReplicas": max(1, round(cpus / 2 + 0.5)),
            "rayStartParams": {"num-cpus": "2"},
            "template": {"spec": {"containers": [container("ray-worker", options.image, "2", [])]}},
        }
    ]
    model = scaling["model"]
    if model.num_gpus:
        workers.append(
            {
                "groupName": "gpu",
                "replicas": model.min_replicas,
                "minReplicas": model.min_replicas,
                "maxReplicas": model.max_replicas,
                "rayStartParams": {"num-cpus": "2"},
                "template": {"spec": {"containers": [container("ray-worker", options.image, "2", [], model.num_gpus)]}},
            }
        )
    head_ports = [("gcs", 6379), ("dashboard", 8265), ("client", 10001), ("serve", options.http_port)]
    head_ports.append(("grpc", options.grpc_port))
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": options.name, "namespace": options.namespace},
        "spec": {
            "serveConfigV2": yaml.safe_dump(config, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": {"spec": {"containers": [container("ray-head", options.image, "1", head_ports)]}},
                },
                "workerGroupSpecs": workers,
            },
        },
    }


def check_settings(bundle_uri: str, settings: dict[str, dict[str, Any]]) -> None:
    """Build each tier's settings from `settings` as its replicas will (pydantic's error, at once,
    for an unknown field or a wrong value)."""
    from gateway_svc.settings import GatewaySettings
    from model_svc.settings import ModelSettings
    from postprocess_svc.settings import PostprocessSettings
    from preprocess_svc.settings import PreprocessSettings

    unknown = sorted(set(settings) - set(TIERS))
    if unknown:
        raise ValueError(f"settings for unknown deployments {unknown}; the deployments are {', '.join(TIERS)}")
    routed = {t: SERVE_ROUTED for t in ("preprocess", "model", "postprocess")}
    GatewaySettings(**{**settings.get("gateway", {}), **routed})
    for tier, cls in (
        ("preprocess", PreprocessSettings),
        ("model", ModelSettings),
        ("postprocess", PostprocessSettings),
    ):
        cls(bundle_uri=bundle_uri, **settings.get(tier, {}))
