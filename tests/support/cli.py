"""The CLI in fresh processes, as users run it: `run` a command, `up` the tiers (its address line
read, SIGTERM at the end), and `one_error_line` for what a mistake must print."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager

SPLITSERVE = [sys.executable, "-m", "splitserve"]


def run(
    *args: str, timeout: float = 120, cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`splitserve ARGS` (in `cwd`, with `env` instead of this process's environment if given)."""
    return subprocess.run(
        [*SPLITSERVE, *args], capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy(), cwd=cwd
    )


def one_error_line(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:") or ": error:" in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


@contextmanager
def up(*args: str):
    with launched(*args) as (_, addresses):
        yield addresses


@contextmanager
def launched(*args: str):
    """`splitserve up ARGS`: (its process, its addresses); SIGTERM at the end."""
    proc = subprocess.Popen([*SPLITSERVE, "up", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, f"up exited: {proc.stderr.read()[-3000:]}"
        yield proc, json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
