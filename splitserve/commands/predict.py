"""`splitserve predict --target HOST:PORT TEXT...`: send records to a gateway; prints the results
as JSON (with --stream, the new text on stderr as it is generated). With `--input FILE --output
FILE`, a file of records is scored instead (`splitserve.commands.predict_file`)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    from splitserve.cliargs import add_kv_flag, count

    p = sub.add_parser(
        "predict",
        help="Send texts, or a file of records, to a gateway; prints results as JSON.",
        description="Send texts (TEXT ...) to a gateway and print the results as JSON; or score a file of records "
        "(--input FILE --output FILE): one answer per record, in input order, failed records written with their "
        "error, a summary line at the end, --resume after an interrupt.",
    )
    p.add_argument("--target", required=True, help="Gateway address host:port (or unix:PATH, a Unix-domain socket).")
    p.add_argument("text", nargs="*", help="Texts, one record each; a JSON object is a whole record.")
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
    f = p.add_argument_group("scoring a file (instead of TEXT)")
    f.add_argument(
        "--input",
        metavar="FILE",
        help="Records to score: .jsonl, .csv or .parquet; a column is a record field (text, text_pair, ...), "
        "an 'id' column the record's id.",
    )
    f.add_argument(
        "--output",
        metavar="FILE",
        help="Where the answers go, one per record in input order: .jsonl, .csv or .parquet (needed with --input).",
    )
    f.add_argument("--batch-size", type=count, default=64, help="Records per request.")
    f.add_argument("--concurrency", type=count, default=4, help="Requests in flight at once.")
    f.add_argument(
        "--retries",
        type=int,
        default=6,
        help="Tries again, with backoff, a request refused for a passing reason (overloaded, unavailable, "
        "deadline exceeded) before the run stops.",
    )
    f.add_argument(
        "--resume",
        action="store_true",
        help="Continue an --output an interrupted run left: its records are skipped, the rest appended.",
    )
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from splitserve.cliargs import parse_kv
    from splitserve.client import Client

    params = parse_kv(args.param)
    if args.input is not None or args.output is not None:
        if args.text or args.stream or args.input is None or args.output is None:
            raise SystemExit(
                "error: score a file with --input FILE and --output FILE together, without TEXT or --stream"
            )
        from splitserve.commands import predict_file

        return predict_file.run(args, params)
    if not args.text:
        raise SystemExit("error: give the TEXT to predict, or --input FILE --output FILE")
    records = [record(i, t) for i, t in enumerate(args.text)]
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
