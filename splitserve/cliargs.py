"""Command-line conventions shared by the `splitserve` subcommands: flags generated from settings
classes, KEY=VALUE flags given once per value, replica counts, the rollout flags, and checks that
fail before anything starts."""

from __future__ import annotations

import argparse
import json
import os
import socket
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

TIERS = ("preprocess", "model", "postprocess")


def count(text: str) -> int:
    """A replica count: a whole number, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def replicas(given: dict[str, Any]) -> dict[str, int]:
    """`up`'s replica counts from --replicas TIER=N (`given`)."""
    counts = dict.fromkeys(TIERS, 1)
    for tier, value in given.items():
        if tier not in counts:
            raise SystemExit(f"error: --replicas {tier}=...: the tiers are {', '.join(TIERS)}")
        try:
            counts[tier] = count(str(value))
        except argparse.ArgumentTypeError as exc:
            raise SystemExit(f"error: --replicas {tier}: {exc}") from None
    return counts


def add_kv_flag(p: argparse.ArgumentParser, flag: str, metavar: str, help_text: str) -> None:
    """A flag that takes KEY=VALUE, one per occurrence (`--param a=1 --param b=2`): read with `parse_kv`."""
    p.add_argument(flag, action="append", metavar=metavar, help=help_text)


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


def check_port(host: str, port: int, flag: str = "--port") -> None:
    """Fail now, before anything starts, if the address cannot be bound (`flag`: the port's flag)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        what, choose = (f"port {port} on {host} ({flag})", flag) if port else (host, "--host")
        why = os.strerror(exc.errno) if exc.errno else str(exc)  # not create_server's "(while attempting ...)"
        raise SystemExit(f"error: cannot listen on {what}: {why}; choose another {choose}") from None


def add_settings_flags(
    parser: argparse.ArgumentParser, settings_cls: type[BaseModel], positional: tuple[str, ...] = ()
) -> None:
    """One flag per settings field (`max_records` -> `--max-records`), help from its description,
    with the field's env var (`SPLITSERVE_<TIER>_MAX_RECORDS`)."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    for name, info in settings_cls.model_fields.items():
        help_text = f"{info.description or ''} [env {prefix}{name.upper()}]"
        if name in positional:
            parser.add_argument(name, help=help_text)
            continue
        flag = "--" + name.replace("_", "-")
        annotation = info.annotation
        origin = typing.get_origin(annotation)
        if annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif origin is list:
            parser.add_argument(flag, dest=name, nargs="+", default=None, help=help_text)
        elif origin is typing.Literal:
            parser.add_argument(flag, dest=name, choices=typing.get_args(annotation), default=None, help=help_text)
        else:
            kind = float if annotation is float else int if annotation in (int, int | None) else str
            parser.add_argument(flag, dest=name, type=kind, default=None, help=f"{help_text} (default: {info.default})")


def settings_from_args(settings_cls: type[BaseModel], args: argparse.Namespace) -> Any:
    """The settings from the flags (and env); a value they refuse is one line naming its flag."""
    given = {k: v for k, v in vars(args).items() if k in settings_cls.model_fields and v is not None}
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                name = str(error["loc"][0])
                message = f"--{name.replace('_', '-')} {error.get('input')!s}: {message[:1].lower()}{message[1:]}"
            problems.append(message)
        raise SystemExit(f"error: {'; '.join(problems)}") from None


def parse_kv(items: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs; values are read as JSON when they parse (numbers, true, lists), else strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out
