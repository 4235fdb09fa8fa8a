"""`splitserve serve-preprocess|serve-model|serve-postprocess BUNDLE_URI` and `serve-gateway`: one
replica of a tier. Their flags are generated from each tier's settings class, so a flag, its env var
(SPLITSERVE_<TIER>_<FIELD>) and its default live in one place."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from splitserve.cliargs import add_settings_flags, settings_from_args


def add_parsers(sub: Any) -> None:
    from gateway_svc.settings import GatewaySettings
    from model_svc.settings import ModelSettings
    from postprocess_svc.settings import PostprocessSettings
    from preprocess_svc.settings import PreprocessSettings

    for name, cls, func, help_text in (
        ("serve-preprocess", PreprocessSettings, serve_preprocess, "Run one preprocess replica."),
        ("serve-model", ModelSettings, serve_model, "Run one model-tier replica (Open Inference Protocol)."),
        ("serve-postprocess", PostprocessSettings, serve_postprocess, "Run one postprocess replica."),
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
    p.set_defaults(func=serve_gateway)


def run_tier(tier: Any, settings: Any) -> int:
    from splitserve.core.grpc_server import serve

    return asyncio.run(serve(tier, settings))


def serve_preprocess(args: argparse.Namespace) -> int:
    from splitserve.core.tokenizer import keep_torch_out

    keep_torch_out()
    from preprocess_svc.server import PreprocessTier
    from preprocess_svc.settings import PreprocessSettings

    settings = settings_from_args(PreprocessSettings, args)
    return run_tier(PreprocessTier(settings), settings)


def serve_postprocess(args: argparse.Namespace) -> int:
    from splitserve.core.tokenizer import keep_torch_out

    keep_torch_out()
    from postprocess_svc.server import PostprocessTier
    from postprocess_svc.settings import PostprocessSettings

    settings = settings_from_args(PostprocessSettings, args)
    return run_tier(PostprocessTier(settings), settings)


def serve_model(args: argparse.Namespace) -> int:
    from model_svc.server import ModelTier
    from model_svc.settings import ModelSettings

    settings = settings_from_args(ModelSettings, args)
    return run_tier(ModelTier(settings), settings)


def serve_gateway(args: argparse.Namespace) -> int:
    from splitserve.core.tokenizer import keep_torch_out

    keep_torch_out()  # with --inline-stages it tokenizes, as the CPU tiers do; it never runs a model
    from gateway_svc.server import GatewayTier
    from gateway_svc.settings import GatewaySettings

    settings = settings_from_args(GatewaySettings, args)
    servicers = None
    if settings.inline_stages is not None:
        from splitserve.inline import inline_servicers

        servicers = inline_servicers(settings.inline_stages)
    return run_tier(GatewayTier(settings, servicers), settings)
