"""A bundle logged with another splitserve's code, loaded as a pyfunc in a process that imported
splitserve first (a notebook, `splitserve bench`): it runs on that process's own model_svc and
protos, never on the bundle's copy beside a splitserve of another version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow

LOAD = """
import splitserve  # imported before the bundle, as a notebook would have
import mlflow
model = mlflow.pyfunc.load_model({path!r})
print("rows", len(model.predict(["a sentence", "another one"], params={{"pooling": "mean"}})))
"""


def test_a_bundle_from_another_version_loads_beside_splitserve(tiny_bundles, tmp_path: Path) -> None:
    exported = tiny_bundles[("feature-extraction", "bert")]
    local = Path(mlflow.artifacts.download_artifacts(exported.bundle_uri, dst_path=str(tmp_path)))
    for package in ("model_svc", "protos"):
        stale = local / "code" / package / "__init__.py"
        assert stale.exists()
        stale.write_text(f'raise ImportError("the bundle\'s own copy of {package} was imported")\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", LOAD.format(path=str(local))], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows 2" in done.stdout
