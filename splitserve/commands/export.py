"""`splitserve export SOURCE_URI`: export a logged model to ONNX and log the serving bundle (the
work itself: `splitserve.export`)."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    from splitserve.cliargs import add_kv_flag

    p = sub.add_parser("export", help="Export a logged model to ONNX and log the serving bundle.")
    p.add_argument("source_uri", help="MLflow URI of the logged transformers model.")
    p.add_argument("--register", help="Register the bundle under this name.")
    p.add_argument("--model-name", help="Name the model is served under (default: the registered/source name).")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="Largest ONNX-vs-PyTorch difference accepted, as a fraction of each output's scale: |diff| <= tolerance * max(1, max|PyTorch value|) (default: %(default)s).",
    )
    add_kv_flag(
        p,
        "--set",
        "PARAM=VALUE",
        "A default request param of the bundle, e.g. --set pooling=mean --set normalize=true.",
    )
    p.add_argument("--no-progress", action="store_true", help="Do not show the progress display.")
    p.add_argument(
        "--max-new-tokens-limit",
        type=int,
        default=256,
        help="text-generation: the most new tokens one request may ask for (default: 256).",
    )
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="Also quantize the ONNX graph (int8: static QDQ, dynamic or blockwise, the fastest that passes the quality "
        "gate vs fp32).",
    )
    add_kv_flag(
        p,
        "--quality",
        "METRIC=VALUE",
        "An int8 quality gate threshold vs fp32: min_cosine (0.95), mean_cosine (0.98), top1_agreement (0.97), label_agreement (0.99).",
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
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from splitserve.cliargs import parse_kv
    from splitserve.export import export_bundle
    from splitserve.mlflow_env import ensure_tracking_uri

    ensure_tracking_uri()
    uri = export_bundle(
        args.source_uri,
        name=args.model_name,
        register=args.register,
        tolerance=args.tolerance,
        defaults=parse_kv(args.set),
        show_progress=not args.no_progress,
        quantize=args.quantize,
        quality_thresholds={k: float(v) for k, v in parse_kv(args.quality).items()} or None,
        max_new_tokens_limit=args.max_new_tokens_limit,
        template=args.template,
        max_length=args.max_length,
    )
    print(uri)
    return 0
