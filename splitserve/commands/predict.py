"""`splitserve predict --target HOST:PORT TEXT...`: send records to a gateway; prints the results
as JSON (with --stream, the new text on stderr as it is generated)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    from splitserve.cliargs import add_kv_flag

    p = sub.add_parser("predict", help="Send texts to a gateway; prints results as JSON.")
    p.add_argument("--target", required=True, help="Gateway address host:port.")
    p.add_argument("text", nargs="+", help="Texts, one record each; a JSON object is a whole record.")
    add_kv_flag(
        p,
        "--param",
        "PARAM=VALUE",
        "A request param, e.g. --param pooling=mean --param top_k=2.",
    )
    p.add_argument("--model-name", default="", help="Model name (default: the served one).")
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
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from splitserve.cliargs import parse_kv
    from splitserve.client import Client

    records = [record(i, t) for i, t in enumerate(args.text)]
    params = parse_kv(args.param)
    with Client(args.target, timeout_s=args.timeout, token=args.token, tls_ca=args.tls_ca) as client:
        if not args.stream:
            results = client.predict(records, params=params, model=args.model_name)
        else:  # the new text to stderr as it comes (one record: as is; several: one line per delta)
            for event in client.stream(records, params=params, model=args.model_name):
                if "results" in event:
                    results = event["results"]
                elif len(records) == 1:
                    print(event["text"], end="", file=sys.stderr, flush=True)
                else:
                    print(f"[{event['id']}] {event['text']!r}", file=sys.stderr, flush=True)
            print(file=sys.stderr)
    print(json.dumps(results, ensure_ascii=False))
    return 0


def record(index: int, arg: str) -> dict[str, Any]:
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
