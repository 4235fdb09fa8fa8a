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
never import MLflow. An immutable URI (models:/name/3, models:/m-<id>, runs:/...: never an alias)
once fetched is kept in the cache's index (`uris.json`: the URI, with the MLflow stores and the
folder it was resolved from, -> its fingerprint), so that a replica starting beside one that holds
that bundle skips the child, and MLflow, altogether.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from splitserve.core.bundle import ARTIFACT_DIR, CONFIG_FILE, OPTIONAL_PARTS
from splitserve.core.errors import BundleError

FINGERPRINT = re.compile(r"[0-9a-f]{32}")
IMMUTABLE_URI = re.compile(r"models:/[^/@]+/\d+|models:/m-[0-9a-f]+|runs:/[^/]+/.+")
INDEX = "uris.json"
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
        entry = indexed(uri, root, parts) or _fetch(uri, root, parts)
        hold(entry)
        clean(root)
        remember(uri, root, entry)
    return entry


def _key(uri: str) -> str:
    """`uri` as the index knows it: with the stores MLflow resolves it in (and the folder a relative one is in)."""
    stores = [os.environ.get(v, "") for v in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")]
    return json.dumps([uri, *stores, os.getcwd()])


def _index(root: Path) -> dict[str, str]:
    try:
        index = json.loads((root / INDEX).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in index.items() if FINGERPRINT.fullmatch(str(v))} if isinstance(index, dict) else {}


def indexed(uri: str, root: Path, parts: tuple[str, ...]) -> Path | None:
    """The entry of immutable `uri` if the index knows it and it holds `parts` whole (call with the cache lock held)."""
    if not IMMUTABLE_URI.fullmatch(uri):
        return None
    fingerprint = _index(root).get(_key(uri), "")
    artifacts = root / fingerprint / ARTIFACT_DIR
    if not FINGERPRINT.fullmatch(fingerprint) or not (artifacts / CONFIG_FILE).is_file():
        return None
    has = json.loads((artifacts / CONFIG_FILE).read_text()).get("artifacts", {})
    if all((artifacts / p).exists() or (p in OPTIONAL_PARTS and p not in has) for p in parts):
        return artifacts.parent
    return None


def remember(uri: str, root: Path, entry: Path) -> None:
    """Index immutable `uri` as `entry`, and forget the entries cleaned away (call with the cache lock held)."""
    known = _index(root)
    index = {k: v for k, v in known.items() if (root / v).is_dir()}
    if IMMUTABLE_URI.fullmatch(uri):
        index[_key(uri)] = entry.name
    if index == known:
        return
    staged = root / f".staging-{INDEX}"
    staged.write_text(json.dumps(index))
    os.replace(staged, root / INDEX)


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
