"""Command-line conventions shared by the `splitserve` subcommands: KEY=VALUE flags given once per
value, replica counts, deprecated spellings kept for one release (with a note), and checks that
fail before anything starts."""

from __future__ import annotations

import argparse
import re
import socket
import sys
from typing import Any

# Flags that take KEY=VALUE, one per occurrence (`--param a=1 --param b=2`). The old spelling with
# several values after one flag (`--param a=1 b=2`) swallowed the positional arguments that
# followed; it still works for one release (`legacy_kv`), with a note.
KV_FLAGS = ("--param", "--set", "--quality", "--replicas")
_KEY_VALUE = re.compile(r"[A-Za-z_][\w.-]*=")
TIERS = ("preprocess", "model", "postprocess")


def legacy_kv(argv: list[str]) -> list[str]:
    """`--param a=1 b=2 TEXT` -> `--param a=1 --param b=2 TEXT` (the deprecated spelling)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        out.append(arg)
        i += 1
        if arg in KV_FLAGS and i < len(argv):
            out.append(argv[i])  # its own value
            i += 1
            while i < len(argv) and _KEY_VALUE.match(argv[i]):
                print(
                    f"note: write {arg} before each KEY=VALUE ({argv[i]}); one {arg} for several is deprecated",
                    file=sys.stderr,
                )
                out += [arg, argv[i]]
                i += 1
    return out


def count(text: str) -> int:
    """A replica count: a whole number, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def renamed(old: str, new: str, value: Any) -> Any:
    """A deprecated flag's value, with a note saying what replaces it."""
    if value is not None:
        print(f"note: {old} is deprecated; use {new}", file=sys.stderr)
    return value


def replicas(given: dict[str, Any], legacy: dict[str, int | None]) -> dict[str, int]:
    """`up`'s replica counts from --replicas TIER=N (`given`) and the deprecated --pre/--model/--post."""
    counts = dict.fromkeys(TIERS, 1)
    for tier, value in given.items():
        if tier not in counts:
            raise SystemExit(f"error: --replicas {tier}=...: the tiers are {', '.join(TIERS)}")
        try:
            counts[tier] = count(str(value))
        except argparse.ArgumentTypeError as exc:
            raise SystemExit(f"error: --replicas {tier}: {exc}") from None
    for flag, tier in (("pre", "preprocess"), ("model", "model"), ("post", "postprocess")):
        value = renamed(f"--{flag} N", f"--replicas {tier}=N", legacy.get(flag))
        if value is not None:
            counts[tier] = value
    return counts


def check_port(host: str, port: int) -> None:
    """Fail now, before anything starts, if the address cannot be bound."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        what = f"port {port} on {host}" if port else host
        raise SystemExit(
            f"error: cannot listen on {what}: {exc.strerror or exc}; choose another --host/--port"
        ) from None
