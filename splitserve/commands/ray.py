"""`splitserve ray BUNDLE_URI`: the Ray Serve application of a bundle, as a Serve config
(`serve.yaml`, `serve deploy`-able) and a KubeRay RayService manifest embedding it
(`rayservice.yaml`); with `--address`, deployed to that running Ray cluster too
(`splitserve.ray_serve`: needs the `ray` extra).

A registry alias (`models:/name@alias`, as BUNDLE_URI or in a tier's `bundle` setting) is resolved
here, once, to the version it names (`models:/name/N`, printed): every replica of the application
loads that one version, and replicas that start later (scaling, a lost host) find it in their host's
bundle cache without asking MLflow. Following an alias as it moves (`--watch-alias`) is not there
on Ray yet: run `splitserve ray` again after moving it."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from splitserve.cliargs import add_kv_flag, parse_kv
from splitserve.core.settings import ALIAS_URI

DEPLOYMENTS = ("preprocess", "model", "postprocess", "gateway")
SETTINGS_KEY = re.compile(r"(preprocess|model|postprocess|gateway)\.([a-z_]+)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ray", help="Ray Serve config and KubeRay RayService for a bundle; with --address, deploy it to a Ray cluster."
    )
    p.add_argument(
        "bundle_uri",
        help="Serving bundle URI (models:/name/N, runs:/..., a path every host has; models:/name@alias is pinned to "
        "the version it names now, printed), as every replica loads it.",
    )
    add_kv_flag(
        p,
        "--replicas",
        "TIER=MIN:MAX",
        "Autoscaling bounds of a deployment (preprocess, model, postprocess, gateway; repeatable). Default: model "
        "1:4, the others' ceilings from the capacity table.",
    )
    add_kv_flag(
        p,
        "--target-ongoing",
        "TIER=N",
        "Ongoing requests per replica Serve's autoscaler aims at (default: model 4, gateway 8, others 2).",
    )
    add_kv_flag(p, "--cpus", "TIER=N", "CPUs Ray reserves per replica (default: model 1, others 0.5).")
    p.add_argument("--model-gpus", type=float, default=0.0, help="GPUs per model replica (a GPU worker group).")
    add_kv_flag(
        p,
        "--setting",
        "TIER.FIELD=VALUE",
        "A tier's setting (its serve-* flag's field, e.g. model.intra_op_threads=1; repeatable).",
    )
    add_kv_flag(p, "--env", "KEY=VALUE", "An env var of every replica (repeatable).")
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI the replicas load the bundle from (default: $MLFLOW_TRACKING_URI)."
    )
    p.add_argument("--upscale-delay-s", type=float, default=3.0, help="Serve's upscale_delay_s of every deployment.")
    p.add_argument("--downscale-delay-s", type=float, default=30.0, help="Serve's downscale_delay_s.")
    p.add_argument(
        "--look-back-s",
        type=float,
        default=30.0,
        help="Serve's look_back_period_s: the window ongoing requests are averaged over before a decision.",
    )
    p.add_argument("--http-host", default="0.0.0.0", help="Host Serve's HTTP proxies listen on.")
    p.add_argument("--http-port", type=int, default=8000, help="Serve's HTTP port (REST and OpenAI routes).")
    p.add_argument("--grpc-port", type=int, default=9000, help="Serve's gRPC port (splitserve.v1.Gateway).")
    p.add_argument("--name", default="splitserve", help="The application's (and the RayService's) name.")
    p.add_argument("--namespace", default="default", help="The RayService's Kubernetes namespace.")
    p.add_argument(
        "--image",
        help="The RayService's container image (built from deploy/Dockerfile with the ray extra, pushed where the "
        "cluster pulls from); without it only serve.yaml is written.",
    )
    p.add_argument("--out", help="Folder for serve.yaml and rayservice.yaml (default: NAME-ray).")
    p.add_argument(
        "--address", help="Deploy to this running Ray cluster (its GCS address, HOST:6379; needs the ray extra)."
    )
    p.add_argument("--timeout-s", type=float, default=300.0, help="With --address: how long to wait for RUNNING.")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> Any:
    """The RayOptions the flags describe; a mistake is one line (SystemExit)."""
    from splitserve.ray_serve import config

    scaling = config.default_scaling(max_model=4, device="gpu" if args.model_gpus else "cpu")
    for flag, given in (
        ("--replicas", args.replicas),
        ("--target-ongoing", args.target_ongoing),
        ("--cpus", args.cpus),
    ):
        for tier, value in parse_kv(given).items():
            if tier not in DEPLOYMENTS:
                raise SystemExit(f"error: {flag} {tier}=...: the deployments are {', '.join(DEPLOYMENTS)}")
            s = scaling[tier]
            if flag == "--replicas":
                low, sep, high = str(value).partition(":")
                if not (sep and low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high)):
                    raise SystemExit(f"error: --replicas {tier}={value}: expected MIN:MAX, 1 <= MIN <= MAX")
                s.min_replicas, s.max_replicas = int(low), int(high)
            elif not isinstance(value, int | float) or value <= 0:
                raise SystemExit(f"error: {flag} {tier}={value}: expected a number above 0")
            elif flag == "--target-ongoing":
                s.target_ongoing_requests = float(value)
            else:
                s.num_cpus = float(value)
    scaling["model"].num_gpus = args.model_gpus
    settings: dict[str, dict[str, Any]] = {}
    for key, value in parse_kv(args.setting).items():
        match = SETTINGS_KEY.fullmatch(key)
        if not match:
            raise SystemExit(f"error: --setting {key}=...: expected TIER.FIELD, TIER one of {', '.join(DEPLOYMENTS)}")
        if match[2] == "watch_alias" and value:
            raise SystemExit(
                f"error: --setting {key}: Ray deployments do not follow an alias yet: splitserve ray pins it to the "
                "version it names now; run splitserve ray again after moving the alias"
            )
        settings.setdefault(match[1], {})[match[2]] = value
    env = {k: str(v) for k, v in parse_kv(args.env).items()}
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if tracking_uri:
        env.setdefault("MLFLOW_TRACKING_URI", tracking_uri)
    return config.RayOptions(
        args.bundle_uri,
        name=args.name,
        scaling=scaling,
        settings=settings,
        env=env,
        http_host=args.http_host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        upscale_delay_s=args.upscale_delay_s,
        downscale_delay_s=args.downscale_delay_s,
        look_back_s=args.look_back_s,
        image=args.image or "",
        namespace=args.namespace,
    )


def run(args: argparse.Namespace) -> int:
    import yaml

    from splitserve.ray_serve import config

    options = options_from_args(args)
    checked(options)
    pin_aliases(options)
    serve = config.serve_config(options)
    out = Path(args.out or f"{args.name}-ray")
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.yaml").write_text(yaml.safe_dump(serve, sort_keys=False))
    line = f"{out}: serve deploy {out}/serve.yaml (a running Ray cluster)"
    if args.image:
        (out / "rayservice.yaml").write_text(yaml.safe_dump(config.ray_service(options, serve), sort_keys=False))
        line += f", kubectl apply -f {out}/rayservice.yaml (KubeRay)"
    print(line)
    if args.address:
        from splitserve.ray_serve.deploy import deploy

        deploy(serve, args.address, args.timeout_s)
        print(
            f"deployed {options.name} to {args.address}: HTTP port {options.http_port}, gRPC port {options.grpc_port}"
        )
    return 0


def checked(options: Any) -> None:
    """The tiers' settings checked here, before any replica starts (one line if one is wrong)."""
    from pydantic import ValidationError

    from splitserve.ray_serve.config import check_settings

    try:
        check_settings(options.bundle_uri, options.settings)
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()
        raise SystemExit(f"error: --setting: {' '.join(first[:3])}") from None


def pin_aliases(options: Any) -> None:
    """Every registry alias the replicas would load (BUNDLE_URI, the tiers' `bundle` settings) as
    the version it names now, printed; one line if it names none."""
    versions: dict[str, str] = {}

    def pinned(uri: str) -> str:
        if ALIAS_URI.fullmatch(uri) and uri not in versions:
            versions[uri] = resolve_alias(uri, options.env.get("MLFLOW_TRACKING_URI"))
            print(f"{uri} is {versions[uri]}: every replica loads that version (moving the alias moves nothing here)")
        return versions.get(uri, uri)

    options.bundle_uri = pinned(options.bundle_uri)
    for tier_settings in options.settings.values():
        if isinstance(tier_settings.get("bundle"), list):
            specs = [str(spec).partition("=") for spec in tier_settings["bundle"]]
            tier_settings["bundle"] = [f"{name}{sep}{pinned(uri) if sep else uri}" for name, sep, uri in specs]


def resolve_alias(uri: str, tracking_uri: str | None) -> str:
    """`models:/name@alias` as `models:/name/N`, by the registry of `tracking_uri` (else MLflow's default)."""
    import mlflow

    from splitserve.core.fetch import missing_store, store_of

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    missing = missing_store(uri)
    if missing:
        raise SystemExit(f"error: cannot resolve {uri}: {missing}")
    name, _, alias = uri.removeprefix("models:/").partition("@")
    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
    except Exception as exc:  # noqa: BLE001 - no such model or alias, or no registry there
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SystemExit(f"error: cannot resolve {uri}: {said} (looked up in {store_of(uri)})") from None
    return f"models:/{name}/{version}"
