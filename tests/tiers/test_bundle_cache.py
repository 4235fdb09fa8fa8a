"""Remote bundles in the host's cache: replicas that start together share one folder per
fingerprint (no copy per start), and fetching cleans the entries no running tier holds. Issue 11,
defect 9 (every start copied its artifacts into a new temp folder, never deleted). An immutable
URI is indexed (`uris.json`) as the entry it was fetched into, and forgotten once cleaned away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LOAD = "import sys; from splitserve.core.bundle import load_bundle; print(load_bundle(sys.argv[1], ('tokenizer', 'onnx')).root)"


def load_in_processes(uri: str, cache: Path, n: int) -> list[str]:
    env = {**os.environ, "SPLITSERVE_CACHE_DIR": str(cache)}
    procs = [
        subprocess.Popen([sys.executable, "-c", LOAD, uri], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(n)
    ]
    out = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return out


def test_replicas_share_one_folder_and_unused_entries_go(tiny_bundles, tmp_path) -> None:
    first = tiny_bundles[("feature-extraction", "bert")]
    second = tiny_bundles[("text-classification", "bert")]
    cache = tmp_path / "cache"
    roots = load_in_processes(first.bundle_uri, cache, 3)  # started together
    assert len(set(roots)) == 1 and Path(roots[0]).parent == cache
    entries = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert entries == [Path(roots[0]).name]  # one copy, no staging left
    assert indexed(cache) == {first.bundle_uri: Path(roots[0]).name}
    assert load_in_processes(first.bundle_uri, cache, 1) == roots[:1]  # a restart finds it there
    (other,) = load_in_processes(second.bundle_uri, cache, 1)
    # The first bundle's holders have exited: fetching the second cleaned it away.
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [Path(other).name]
    assert indexed(cache) == {second.bundle_uri: Path(other).name}


def indexed(cache: Path) -> dict[str, str]:
    """The cache's index as URI -> fingerprint (its keys also name the stores and the folder)."""
    return {json.loads(k)[0]: v for k, v in json.loads((cache / "uris.json").read_text()).items()}
