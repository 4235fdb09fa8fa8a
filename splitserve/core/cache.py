"""The bundle cache: one folder per bundle fingerprint, shared by every tier on a host.

A remote bundle (runs:/, models:/...) is fetched into `<cache>/<fingerprint>/artifacts/`, each part
(serving.json, tokenizer/, onnx/) downloaded once, into a staging folder first and then renamed into
place, so that a part is there whole or not at all. Replicas that start together wait for each
other (one lock for the whole cache, held while fetching and cleaning) and then share the files.

A tier holds a shared lock on `<cache>/<fingerprint>.users` for as long as it runs. Whoever fetches
also cleans: every entry that no running process holds is deleted, and so are staging folders left
by a fetch that died. Locks are `flock`s: the kernel releases them when a process dies, however it
dies.

The fetching itself runs in a child process (`python -m splitserve.core.fetch`), so that tiers
never import MLflow.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from splitserve.core.errors import BundleError

FINGERPRINT = re.compile(r"[0-9a-f]{32}")
_HELD: dict[Path, tuple[IO[str], int]] = {}  # this process's shared locks on the entries it uses, and its users


def cache_root(cache_dir: str | None = None) -> Path:
    """`cache_dir`, else $SPLITSERVE_CACHE_DIR, else a folder of this user's in the temp dir."""
    root = cache_dir or os.environ.get("SPLITSERVE_CACHE_DIR")
    return Path(root) if root else Path(tempfile.gettempdir()) / f"splitserve-cache-{os.getuid()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch(uri: str, parts: tuple[str, ...], cache_dir: str | None = None) -> Path:
    """The local bundle root of `uri` in the cache, with serving.json and `parts` there; held
    (never cleaned) while this process runs."""
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(root / ".lock"):
        entry = _fetch(uri, root, parts)
        hold(entry)
        clean(root)
    return entry


def _fetch(uri: str, root: Path, parts: tuple[str, ...]) -> Path:
    cmd = [sys.executable, "-m", "splitserve.core.fetch", uri, str(root), *parts]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        said = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        raise BundleError((said or lines or ["the fetch process failed without a message"])[-1])
    entry = Path(proc.stdout.strip().splitlines()[-1])
    if entry.parent != root or not FINGERPRINT.fullmatch(entry.name):
        raise BundleError(f"cannot fetch bundle {uri!r}: the fetch process answered {str(entry)!r}")
    return entry


def hold(entry: Path) -> None:
    """Mark `entry` in use by this process until it exits, or until each `hold` of it was `release`d."""
    if entry in _HELD:
        fh, users = _HELD[entry]
        _HELD[entry] = fh, users + 1
        return
    fh = open(entry.parent / f"{entry.name}.users", "a+")  # noqa: SIM115 - kept open: the lock lives with it
    fcntl.flock(fh, fcntl.LOCK_SH)
    _HELD[entry] = fh, 1


def release(entry: Path) -> None:
    """One user of `entry` in this process is done with it (a version it unloaded, a poll that found
    nothing new); once none is left, the next clean may delete it."""
    if entry not in _HELD:
        return
    fh, users = _HELD.pop(entry)
    if users > 1:
        _HELD[entry] = fh, users - 1
    else:
        fh.close()


def clean(root: Path) -> list[str]:
    """Delete the entries no running process holds, and dead fetches' staging folders (call with
    the cache lock held). Returns the names deleted."""
    deleted = []
    for path in sorted(root.iterdir()):
        if path.is_dir() and path.name.startswith(".staging-"):
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_dir() and FINGERPRINT.fullmatch(path.name):
            users = root / f"{path.name}.users"
            with open(users, "a+") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a running tier uses it
                shutil.rmtree(path, ignore_errors=True)
                users.unlink(missing_ok=True)
                deleted.append(path.name)
    return deleted
