"""The `splitserve` command line. Tier flags are generated from each tier's settings class,
so a flag, its env var (SPLITSERVE_<TIER>_<FIELD>) and its default live in one place."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from splitserve import __version__
from splitserve.bench import command as bench_command
from splitserve.cliargs import add_settings_flags, check_port, count, legacy_kv, renamed, replicas, settings_from_args
from splitserve.cliargs import parse_kv as _parse_kv
from splitserve.k8s import command as k8s_command


def _run_tier(tier: Any, settings: Any) -> int:
    from splitserve.core.grpc_server import serve

    return asyncio.run(serve(tier, settings))


def cmd_serve_preprocess(args: argparse.Namespace) -> int:
    from splitserve.core.tokenizer import keep_torch_out

    keep_torch_out()
    from preprocess_svc.server import PreprocessTier
    from preprocess_svc.settings import PreprocessSettings

    settings = settings_from_args(PreprocessSettings, args)
    return _run_tier(PreprocessTier(settings), settings)


def cmd_serve_postprocess(args: argparse.Namespace) -> int:
    from splitserve.core.tokenizer import keep_torch_out

    keep_torch_out()
    from postprocess_svc.server import PostprocessTier
    from postprocess_svc.settings import PostprocessSettings

    settings = settings_from_args(PostprocessSettings, args)
    return _run_tier(PostprocessTier(settings), settings)


def cmd_serve_model(args: argparse.Namespace) -> int:
    from model_svc.server import ModelTier
    from model_svc.settings import ModelSettings

    settings = settings_from_args(ModelSettings, args)
    return _run_tier(ModelTier(settings), settings)


def cmd_serve_gateway(args: argparse.Namespace) -> int:
    from splitserve.core.tokenizer import keep_torch_out

    keep_torch_out()  # with --inline-stages it tokenizes, as the CPU tiers do; it never runs a model
    from gateway_svc.server import GatewayTier
    from gateway_svc.settings import GatewaySettings

    settings = settings_from_args(GatewaySettings, args)
    stages = None
    if settings.inline_stages is not None:
        from splitserve.inline import inline_stages

        stages = inline_stages(settings.inline_stages)
    return _run_tier(GatewayTier(settings, stages), settings)


def cmd_log(args: argparse.Namespace) -> int:
    from splitserve.mlflow_env import ensure_tracking_uri
    from splitserve.source import DEFAULT_TASK, log_pipeline

    ensure_tracking_uri()
    model_config = json.loads(args.model_config) if args.model_config else None
    model_dir = Path(args.model_dir) if args.model_dir else None
    register = args.register or renamed("log --name", "--register", args.legacy_name)
    print(log_pipeline(model_dir, args.task or DEFAULT_TASK, register, args.prompt_template, model_config))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from splitserve.export import export_bundle
    from splitserve.mlflow_env import ensure_tracking_uri

    ensure_tracking_uri()
    uri = export_bundle(
        args.source_uri,
        name=args.model_name or renamed("export --name", "--model-name", args.legacy_name),
        register=args.register,
        tolerance=args.tolerance,
        defaults=_parse_kv(args.set),
        show_progress=not args.no_progress,
        quantize=args.quantize,
        quality_thresholds={k: float(v) for k, v in _parse_kv(args.quality).items()} or None,
        max_new_tokens_limit=args.max_new_tokens_limit,
        template=args.template,
        max_length=args.max_length,
    )
    print(uri)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from splitserve.describe import describe, show
    from splitserve.mlflow_env import ensure_tracking_uri

    ensure_tracking_uri()
    facts = describe(args.bundle_uri)
    if args.json:
        print(json.dumps(facts, ensure_ascii=False))
    else:
        show(facts)
    return 0


def cmd_new_template(args: argparse.Namespace) -> int:
    from splitserve.skeleton import write

    try:
        path = write(args.name, Path(args.dir))
    except (ValueError, FileExistsError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(path)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from splitserve.launcher import up
    from splitserve.mlflow_env import ensure_tracking_uri

    ensure_tracking_uri()
    from splitserve.launcher import default_model_replicas

    legacy = {flag: getattr(args, f"legacy_{flag}") for flag in ("pre", "model", "post")}
    given = _parse_kv(args.replicas)
    if legacy["model"] is None:
        given.setdefault("model", default_model_replicas())
    counts = replicas(given, legacy)
    # What can be checked is checked before anything starts: the address, the bundle (its
    # serving.json, fetched into the cache the tiers then share), the token file.
    check_port(args.host, args.port)
    if args.rest_port and not args.no_rest:
        check_port(args.host, args.rest_port, "--rest-port")
    if args.auth_token_file and not Path(args.auth_token_file).is_file():
        raise SystemExit(f"error: --auth-token-file {args.auth_token_file}: no such file")
    from splitserve.core.bundle import PARTS, load_bundle
    from splitserve.core.cache import cache_root

    # Fetched once into the host's bundle cache, held while `up` runs; every replica (and every
    # restart) then loads that verified folder: no fetch per start, one bundle whatever an alias
    # does. Every part any tier reads (the template too), since the tiers are handed the folder.
    first, *more = args.bundle_uri
    bundle = load_bundle(first, PARTS)
    if (args.watch_alias or more) and args.inline_stages:
        raise SystemExit(
            "error: --watch-alias and several bundles need the preprocess and postprocess tiers: drop --inline-stages"
        )
    tier_args = ["--watch-alias", "--watch-interval-s", str(args.watch_interval_s)] if args.watch_alias else []
    if more:  # served beside the first, each under its own name (requests choose by `model`)
        specs = []
        for uri in more:
            other = load_bundle(uri, PARTS)
            specs.append(
                f"{other.config.name}={other.root if other.root.parent == cache_root() and not args.watch_alias else uri}"
            )
        tier_args += ["--bundle", *specs]
    model_args = ["--intra-op-threads", str(args.intra_op_threads)] if args.intra_op_threads is not None else []
    model_args += ["--device", args.device]
    return up(
        # With --watch-alias every replica follows the alias itself.
        str(bundle.root) if bundle.root.parent == cache_root() and not args.watch_alias else first,
        counts["preprocess"],
        counts["model"],
        counts["postprocess"],
        args.backend,
        args.host,
        args.port,
        model_args,
        inline_stages=args.inline_stages,
        gateway_args=["--auth-token-file", args.auth_token_file] if args.auth_token_file else None,
        rest_port=None if args.no_rest else args.rest_port,
        tier_mtls=args.tier_mtls,
        tier_args=tier_args,
    )


def _record(index: int, arg: str) -> dict[str, Any]:
    """A JSON object is a whole record ({"question": ..., "context": ...}); anything else a text.
    An argument that starts with `{` is meant as a record: it must be one."""
    if not arg.lstrip().startswith("{"):
        return {"id": str(index), "text": arg}
    try:
        value = json.loads(arg)
    except ValueError as exc:
        raise SystemExit(
            f"error: record {index} starts with '{{' but is not valid JSON ({exc}); "
            'quote the object\'s keys and strings with double quotes, e.g. \'{"text": "..."}\''
        ) from None
    if not isinstance(value, dict):
        raise SystemExit(f"error: record {index} starts with '{{' but is not a JSON object")
    return {"id": str(index), **value}


def cmd_predict(args: argparse.Namespace) -> int:
    from splitserve.client import Client

    records = [_record(i, t) for i, t in enumerate(args.text)]
    model = args.model_name or renamed("predict --model", "--model-name", args.legacy_model) or ""
    with Client(args.target, timeout_s=args.timeout, token=args.token, tls_ca=args.tls_ca) as client:
        if not args.stream:
            results = client.predict(records, params=_parse_kv(args.param), model=model)
        else:  # the new text to stderr as it comes (one record: as is; several: one line per delta)
            for event in client.stream(records, params=_parse_kv(args.param), model=model):
                if "results" in event:
                    results = event["results"]
                elif len(records) == 1:
                    print(event["text"], end="", file=sys.stderr, flush=True)
                else:
                    print(f"[{event['id']}] {event['text']!r}", file=sys.stderr, flush=True)
            print(file=sys.stderr)
    print(json.dumps(results, ensure_ascii=False))
    return 0


def add_rollout_flags(p: argparse.ArgumentParser) -> None:
    """`up`'s and `k8s`'s --watch-alias (every tier's own flag, passed to each replica)."""
    p.add_argument(
        "--watch-alias",
        action="store_true",
        help="Every tier follows the bundle URIs' registry aliases (models:/NAME@ALIAS): a moved alias is rolled out "
        "with zero errors (new version loaded, switched to, old one unloaded once unused).",
    )
    p.add_argument(
        "--watch-interval-s", type=float, default=10.0, help="With --watch-alias: seconds between registry polls."
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from splitserve.demo import main

    return main(workdir=Path(args.workdir))


def build_parser() -> argparse.ArgumentParser:
    from gateway_svc.settings import GatewaySettings
    from model_svc.settings import ModelSettings
    from postprocess_svc.settings import PostprocessSettings
    from preprocess_svc.settings import PreprocessSettings

    parser = argparse.ArgumentParser(
        prog="splitserve", description="Serve MLflow-logged Transformers pipelines as split gRPC tiers."
    )
    parser.add_argument("--version", action="version", version=f"splitserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("log", help="Log a transformers pipeline to MLflow (default: the bundled all-MiniLM-L6-v2).")
    p.add_argument(
        "--model-dir", help="A saved Hugging Face model+tokenizer folder (default: bundled all-MiniLM-L6-v2)."
    )
    p.add_argument("--task", help="Pipeline task (default: the bundled model's, feature-extraction).")
    p.add_argument("--register", metavar="NAME", help="Register the logged model under this name.")
    p.add_argument("--name", dest="legacy_name", help=argparse.SUPPRESS)  # deprecated: --register
    p.add_argument("--prompt-template", help="Generation tasks: MLflow prompt template with one {prompt}.")
    p.add_argument(
        "--model-config",
        help='MLflow model_config as JSON: inference defaults, e.g. \'{"max_new_tokens": 64, "collapse_whitespace": true}\'.',
    )
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("export", help="Export a logged model to ONNX and log the serving bundle.")
    p.add_argument("source_uri", help="MLflow URI of the logged transformers model.")
    p.add_argument("--register", help="Register the bundle under this name.")
    p.add_argument("--model-name", help="Name the model is served under (default: the registered/source name).")
    p.add_argument("--name", dest="legacy_name", help=argparse.SUPPRESS)  # deprecated: --model-name
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="Largest ONNX-vs-PyTorch difference accepted, as a fraction of each output's scale: |diff| <= tolerance * max(1, max|PyTorch value|) (default: %(default)s).",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="PARAM=VALUE",
        help="A default request param of the bundle, e.g. --set pooling=mean --set normalize=true.",
    )
    p.add_argument("--no-progress", action="store_true", help="Do not show the progress display.")
    p.add_argument(
        "--max-new-tokens-limit",
        type=int,
        default=256,
        help="text-generation: the most new tokens one request may ask for (default: 256).",
    )
    p.add_argument(
        "--quantize", choices=("int8",), help="Also quantize the ONNX graph (dynamic int8, gated on quality vs fp32)."
    )
    p.add_argument(
        "--quality",
        action="append",
        metavar="METRIC=VALUE",
        help="An int8 quality gate threshold vs fp32: min_cosine (0.95), mean_cosine (0.98), top1_agreement (0.8), label_agreement (0.99).",
    )
    p.add_argument(
        "--max-length",
        type=int,
        help="The longest input, for a model that declares none (default 512); at most its position embeddings.",
    )
    p.add_argument(
        "--template",
        metavar="PATH",
        help="Your own pre/post logic (a .py file or a package directory): shipped in the bundle, run in the tiers.",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inspect", help="What a bundle serves, and each request param's default and its origin.")
    p.add_argument("bundle_uri", help="Serving bundle URI.")
    p.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("new-template", help="Write a commented template skeleton NAME.py to fill in.")
    p.add_argument("name", help="Module name (the file is NAME.py).")
    p.add_argument("--dir", default=".", help="Folder to write it in (default: here).")
    p.set_defaults(func=cmd_new_template)

    bench_command.add_parser(sub)

    for name, cls, func, help_text in (
        ("serve-preprocess", PreprocessSettings, cmd_serve_preprocess, "Run one preprocess replica."),
        ("serve-model", ModelSettings, cmd_serve_model, "Run one model-tier replica (Open Inference Protocol)."),
        ("serve-postprocess", PostprocessSettings, cmd_serve_postprocess, "Run one postprocess replica."),
    ):
        p = sub.add_parser(name, help=help_text)
        add_settings_flags(p, cls, positional=("bundle_uri",))
        p.set_defaults(func=func)
    p = sub.add_parser("serve-gateway", help="Run the gateway in front of the tiers' replicas.")
    add_settings_flags(p, GatewaySettings)
    # KServe appends these to a transformer's command line; accepted and unused (the model tier's
    # address comes from --model).
    for flag in ("--model_name", "--predictor_host", "--http_port", "--workers"):
        p.add_argument(flag, dest=f"kserve_{flag[2:]}", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve_gateway)

    p = sub.add_parser("up", help="Run every tier and the gateway locally; prints their addresses as JSON.")
    p.add_argument(
        "bundle_uri",
        nargs="+",
        help="Serving bundle URI; more URIs are served beside it, each under its bundle's name (requests choose by model).",
    )
    p.add_argument(
        "--replicas",
        action="append",
        metavar="TIER=N",
        help="Replicas of a tier, e.g. --replicas model=2 (preprocess, postprocess: 1; model: one per core, up to 4, "
        "one intra-op thread each).",
    )
    for legacy in ("pre", "model", "post"):  # deprecated: --replicas TIER=N
        p.add_argument(f"--{legacy}", dest=f"legacy_{legacy}", type=count, help=argparse.SUPPRESS)
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx", help="Model-tier backend.")
    p.add_argument("--host", default="127.0.0.1", help="Address every process binds.")
    p.add_argument("--port", type=int, default=0, help="Gateway port (0: a free one).")
    p.add_argument("--rest-port", type=int, default=0, help="Gateway's REST/OpenAI port (0: a free one).")
    p.add_argument("--no-rest", action="store_true", help="Serve the gateway over gRPC only.")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="Where the model tier runs.")
    p.add_argument("--auth-token-file", help="Gateway: accept only calls bearing one of this file's tokens.")
    p.add_argument(
        "--tier-mtls",
        action="store_true",
        help="Mutual TLS between the gateway and the tiers (certificates made for this run): the tiers accept only the gateway.",
    )
    p.add_argument(
        "--inline-stages",
        action="store_true",
        help="Run the preprocess and postprocess stages inside the gateway (no tiers for them; lower latency).",
    )
    add_rollout_flags(p)
    p.add_argument(
        "--intra-op-threads",
        type=int,
        help="Threads per model replica (default: this machine's CPUs divided among the model replicas).",
    )
    p.set_defaults(func=cmd_up)

    k8s_command.add_parsers(sub, add_rollout_flags)

    p = sub.add_parser("predict", help="Send texts to a gateway; prints results as JSON.")
    p.add_argument("--target", required=True, help="Gateway address host:port.")
    p.add_argument("text", nargs="+", help="Texts, one record each; a JSON object is a whole record.")
    p.add_argument(
        "--param",
        action="append",
        metavar="PARAM=VALUE",
        help="A request param, e.g. --param pooling=mean --param top_k=2.",
    )
    p.add_argument("--model-name", default="", help="Model name (default: the served one).")
    p.add_argument("--model", dest="legacy_model", help=argparse.SUPPRESS)  # deprecated: --model-name
    p.add_argument("--timeout", type=float, default=60.0, help="Deadline in seconds.")
    p.add_argument(
        "--stream", action="store_true", help="Generation tasks: show the new text on stderr as it is generated."
    )
    p.add_argument(
        "--token",
        default=os.environ.get("SPLITSERVE_TOKEN"),
        help="Bearer token for a gateway that requires one (default: $SPLITSERVE_TOKEN).",
    )
    p.add_argument("--tls-ca", help="PEM CA file: call the gateway over TLS and check its certificate.")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="The main job: log MiniLM, export it, serve every tier, query, print a ranking.")
    p.add_argument("--workdir", default=".", help="Where the MLflow store goes (default: here).")
    p.set_defaults(func=cmd_demo)
    return parser


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM unwinds the command as an exception would, so that what it made (an export's temp
    folder of some hundred MB) is removed; the servers and `up` install their own handlers."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(legacy_kv(sys.argv[1:] if argv is None else argv))
    from splitserve.quiet import quiet

    quiet()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        import grpc

        from splitserve.core.errors import SplitServeError

        if isinstance(exc, grpc.RpcError):  # a server's answer (splitserve.errors): its code and message
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 1
        if isinstance(exc, SplitServeError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
