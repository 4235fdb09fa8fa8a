"""The `splitserve` command line: the parser and the dispatch. Each command lives in a module named
for it (`splitserve.commands.<command>`, `splitserve.bench.command`, `splitserve.k8s.command`),
which adds its own subparser (`add_parser`) and runs it (`run`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from splitserve import __version__
from splitserve.bench import command as bench
from splitserve.cliargs import settings_from_args
from splitserve.commands import demo, export, inspect, log, new_template, predict, ray, serve, up
from splitserve.k8s import command as k8s

__all__ = ["build_parser", "main", "settings_from_args"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitserve", description="Serve MLflow-logged Transformers pipelines as split gRPC tiers."
    )
    parser.add_argument("--version", action="version", version=f"splitserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    log.add_parser(sub)
    export.add_parser(sub)
    inspect.add_parser(sub)
    new_template.add_parser(sub)
    bench.add_parser(sub)
    serve.add_parsers(sub)
    up.add_parser(sub)
    k8s.add_parsers(sub)
    ray.add_parser(sub)
    predict.add_parser(sub)
    demo.add_parser(sub)
    return parser


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM unwinds the command as an exception would, so that what it made (an export's temp
    folder of some hundred MB) is removed; the servers and `up` install their own handlers."""
    raise SystemExit(128 + signum)


def _stopped_by_signal(exc: BaseException) -> int | None:
    """The exit code of `_terminated` where another exception swallowed its SystemExit (an import of
    a C extension, such as onnxruntime's, turns it into `ImportError: initialization failed`)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SystemExit) and isinstance(seen.code, int) and seen.code > 128:
            return seen.code
        seen = seen.__cause__ or seen.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from splitserve.quiet import quiet

    quiet()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        stopped = _stopped_by_signal(exc)
        if stopped is not None:  # SIGTERM while a C extension was importing: it became an ImportError
            return stopped
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
