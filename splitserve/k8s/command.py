"""`splitserve k8s` and `splitserve kserve`: their flags and the command (the tree itself: `splitserve.k8s`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from splitserve.cliargs import add_rollout_flags, parse_kv


def add_parsers(sub: Any) -> None:
    for command, help_text in (
        ("k8s", "Kubernetes manifests for a bundle (kustomize): per tier a Deployment, Service, PDB, autoscaler."),
        ("kserve", "A KServe InferenceService for a bundle (kustomize): model tier predictor, gateway transformer."),
    ):
        p = sub.add_parser(command, help=help_text)
        p.add_argument("bundle_uri", help="Serving bundle URI (models:/..., runs:/...), as the pods will load it.")
        p.add_argument(
            "--image",
            help="Container image every pod runs (required): build it from deploy/Dockerfile and push it where the "
            "cluster pulls from; splitserve publishes none.",
        )
        p.add_argument("--gpu-image", help="The model pods' image in the GPU overlay (default: --image).")
        p.add_argument("--tracking-uri", help="MLflow tracking server the pods use (default: $MLFLOW_TRACKING_URI).")
        p.add_argument(
            "--env-from-secret",
            action="append",
            metavar="NAME",
            help="A Secret whose keys become env vars of every pod that downloads bundles: the tracking server's "
            "or the artifact store's credentials (MLFLOW_TRACKING_TOKEN, AWS_ACCESS_KEY_ID, ...). Repeatable.",
        )
        p.add_argument("--env", action="append", metavar="KEY=VALUE", help="An env var of every pod (repeatable).")
        p.add_argument(
            "--rest-port",
            type=int,
            default=8080,
            help="The gateway's REST and OpenAI-compatible door, on its pods and its Service (default: %(default)s).",
        )
        p.add_argument("--no-rest", action="store_true", help="Serve the gateway over gRPC only.")
        p.add_argument("--name", default="splitserve", help="Prefix of every object's name.")
        p.add_argument("--namespace", default="default", help="Namespace.")
        p.add_argument(
            "--replicas",
            action="append",
            metavar="TIER=N",
            help="Initial (and minimum) replicas of a tier, e.g. --replicas model=2; tiers not given follow the "
            "capacity table.",
        )
        p.add_argument("--max-replicas", type=int, default=10, help="Autoscaler ceiling per tier.")
        p.add_argument("--backend", choices=("onnx", "torch"), default="onnx", help="Model-tier backend.")
        p.add_argument(
            "--autoscaler",
            choices=("hpa", "keda"),
            default="hpa",
            help="hpa: CPU 70%%; keda: the tiers' own Prometheus metrics (queued rows, requests in flight).",
        )
        p.add_argument(
            "--prometheus-url", default="http://prometheus-operated.monitoring.svc:9090", help="KEDA's Prometheus."
        )
        p.add_argument(
            "--capacity", help="Capacity table: a bench's results.json (default: the committed MiniLM 2-CPU one)."
        )
        if command == "k8s":
            p.add_argument(
                "--tier-tls-secret",
                help="A TLS Secret (ca.crt, tls.crt, tls.key; its certificate naming <name>-tier): mutual TLS "
                "between the gateway and the tiers.",
            )
        p.add_argument(
            "--bundle",
            action="append",
            metavar="NAME=URI",
            help="More bundles served beside BUNDLE_URI by every tier (requests choose one by its model name).",
        )
        add_rollout_flags(p)
        p.add_argument("--out", help="Folder for the kustomize tree (default: NAME-k8s or NAME-kserve).")
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`splitserve k8s` and `splitserve kserve`: the kustomize tree (splitserve.k8s)."""
    from splitserve import k8s
    from splitserve.k8s import capacity

    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise SystemExit(
            "error: --tracking-uri (or MLFLOW_TRACKING_URI): the MLflow server the pods load the bundle from"
        )
    counts = {}
    for tier, n in parse_kv(args.replicas).items():
        if not isinstance(n, int) or n < 1:
            raise SystemExit(f"error: --replicas {tier}={n}: replicas are a whole number, at least 1")
        counts[tier] = n
    try:
        options = k8s.Options(
            args.bundle_uri,
            tracking_uri=tracking_uri,
            image=args.image or "",
            gpu_image=args.gpu_image,
            name=args.name,
            namespace=args.namespace,
            replicas=counts,
            max_replicas=args.max_replicas,
            backend=args.backend,
            autoscaler=args.autoscaler,
            prometheus_url=args.prometheus_url,
            tier_tls_secret=getattr(args, "tier_tls_secret", None),
            bundles=tuple(args.bundle or ()),
            watch_alias=args.watch_alias,
            watch_interval_s=args.watch_interval_s,
            rest_port=None if args.no_rest else args.rest_port,
            env=tuple(args.env or ()),
            env_from_secrets=tuple(args.env_from_secret or ()),
        )
        files = k8s.render(options, args.command, capacity.load(args.capacity))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    out = Path(args.out or f"{args.name}-{args.command}")
    k8s.write(files, out)
    print(f"{out}: kubectl apply -k {out}/overlays/cpu (or {out}/overlays/gpu)")
    return 0
