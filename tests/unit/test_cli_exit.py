"""How the CLI ends when SIGTERM stops a command: with 128 + 15, also where the signal's SystemExit
was raised inside a C extension's import and came out as an ImportError (seen in a full run:
`splitserve export` stopped while importing onnxruntime ended with 1 and a traceback)."""

from __future__ import annotations

import argparse
import signal

import pytest

from splitserve import cli


def _run(body) -> int:
    parser = argparse.ArgumentParser()
    parser.set_defaults(func=lambda args: body())
    real = cli.build_parser
    cli.build_parser = lambda: parser  # type: ignore[assignment]
    try:
        return cli.main([])
    finally:
        cli.build_parser = real  # type: ignore[assignment]
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _terminated_inside_an_import() -> None:
    try:
        cli._terminated(signal.SIGTERM, None)
    except SystemExit as exc:
        raise ImportError("initialization failed") from exc


def test_sigterm_swallowed_by_an_import_still_exits_143() -> None:
    assert _run(_terminated_inside_an_import) == 128 + signal.SIGTERM


def test_other_errors_are_not_taken_for_a_signal() -> None:
    def fails() -> None:
        try:
            raise SystemExit(0)
        except SystemExit as exc:
            raise ValueError("a bug") from exc

    with pytest.raises(ValueError, match="a bug"):
        _run(fails)
