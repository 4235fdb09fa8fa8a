"""The serving bundle's files: paths in serving.json stay inside the verified parts (issue 11,
defect 11), and the bundle cache keeps one folder per fingerprint, shared, cleaned of what no
running process holds (defect 9). No MLflow: a fake bundle on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from splitserve.core import cache
from splitserve.core.bundle import Bundle, ServingConfig, hash_tree, read_local
from splitserve.core.errors import BundleError


def fake_bundle(root: Path, onnx_file: str = "model.onnx") -> Bundle:
    artifacts = root / "artifacts"
    (artifacts / "onnx").mkdir(parents=True)
    (artifacts / "onnx" / "model.onnx").write_bytes(b"graph")
    config = ServingConfig(
        name="m",
        task="feature-extraction",
        source_model_uri="runs:/x/model",
        model_inputs=["input_ids"],
        model_outputs=["last_hidden_state"],
        max_length=8,
        onnx_file=onnx_file,
        artifacts={"onnx": hash_tree(artifacts / "onnx")},
    )
    config.fingerprint = config.compute_fingerprint()
    (artifacts / "serving.json").write_text(config.to_json())
    return read_local(root)


@pytest.mark.parametrize("name", ["../../x.onnx", "/etc/passwd", "sub/../../model.onnx"])
def test_paths_outside_the_bundle_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "x.onnx").write_bytes(b"evil")
    bundle = fake_bundle(tmp_path / "b", onnx_file=name)
    with pytest.raises(BundleError, match="outside the bundle's 'onnx' artifact"):
        bundle.verify(("onnx",))
    with pytest.raises(BundleError, match="outside"):
        bundle.onnx_path  # noqa: B018


def test_symbolic_links_in_a_part_are_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.onnx").write_bytes(b"graph")
    bundle = fake_bundle(tmp_path / "b")
    link = bundle.artifacts / "onnx" / "model.onnx"
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere.onnx")  # same bytes, so the hash alone would pass
    with pytest.raises(BundleError, match="symbolic link"):
        bundle.verify(("onnx",))


def test_fingerprints_of_older_bundles_still_verify(tmp_path: Path) -> None:
    """Fields added later (vocab_size, type_vocab_size) leave an older bundle's fingerprint as it was."""
    bundle = fake_bundle(tmp_path / "b")
    data = json.loads((bundle.artifacts / "serving.json").read_text())
    del data["vocab_size"], data["type_vocab_size"]
    assert ServingConfig.from_json(json.dumps(data)).compute_fingerprint() == bundle.fingerprint


HOLD = """
import sys, time
from pathlib import Path
from splitserve.core import cache
cache.hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


def test_cache_cleaning_spares_what_a_running_process_holds(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    used, unused = root / ("a" * 32), root / ("b" * 32)
    for entry in (used, unused):
        (entry / "artifacts").mkdir(parents=True)
    (root / ".staging-dead").mkdir()  # a fetch that died midway
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(used)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert cache.clean(root) == ["b" * 32]
        assert used.exists() and not unused.exists() and not (root / ".staging-dead").exists()
    finally:
        holder.kill()
        holder.wait()
    assert cache.clean(root) == ["a" * 32]  # its holder is gone (however it died): the lock went with it


def test_the_cache_index_serves_an_immutable_uri_it_holds_without_mlflow(tmp_path: Path, monkeypatch) -> None:
    """A replica starting beside one that holds models:/m/3 takes it from the index, without the
    fetch process (here it would fail: no such store); an alias, another store or a part not there
    yet never comes from the index, and the index forgets what the cache cleaned away."""
    root = tmp_path / "cache"
    bundle = fake_bundle(tmp_path / "b")
    entry = root / bundle.fingerprint
    root.mkdir()
    (tmp_path / "b").rename(entry)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/none.db")
    for uri in ("models:/m/3", "models:/m-0a1b", "runs:/r1/bundle", "models:/m@champion", "models:/m/latest"):
        cache.remember(uri, root, entry)
    assert cache.fetch("models:/m/3", ("onnx", "template"), str(root)) == entry  # it has no template: none needed
    cache.release(entry)
    assert cache.indexed("models:/m-0a1b", root, ("onnx",)) == cache.indexed("runs:/r1/bundle", root, ()) == entry
    assert cache.indexed("models:/m@champion", root, ()) is None  # an alias moves: always asked
    assert cache.indexed("models:/m/latest", root, ()) is None
    assert cache.indexed("models:/m/3", root, ("tokenizer",)) is None  # not fetched yet: the fetch process adds it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    assert cache.indexed("models:/m/3", root, ()) is None  # another store's version 3
    assert cache.clean(root) == [bundle.fingerprint]  # nothing holds it any more
    cache.remember("models:/m@champion", root, entry)
    assert json.loads((root / cache.INDEX).read_text()) == {}
