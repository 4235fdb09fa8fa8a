"""Download parts of a serving bundle with MLflow: `python -m splitserve.core.fetch URI DEST [PART...]`.

Run as a child process by `splitserve.core.bundle.load_bundle` so that tier processes never import
MLflow. Prints the local bundle root (the directory holding `artifacts/`) as its last line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from splitserve.core.bundle import ARTIFACT_DIR, CONFIG_FILE, OPTIONAL_PARTS


def fetch(uri: str, dest: str, parts: list[str]) -> Path:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(uri)
    config = Path(repo.download_artifacts(f"{ARTIFACT_DIR}/{CONFIG_FILE}", dest))
    present = json.loads(config.read_text()).get("artifacts", {})
    for part in parts:
        if part in OPTIONAL_PARTS and part not in present:
            continue
        repo.download_artifacts(f"{ARTIFACT_DIR}/{part}", dest)
    return config.parent.parent


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m splitserve.core.fetch URI DEST [PART...]", file=sys.stderr)
        return 2
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    print(fetch(argv[0], argv[1], argv[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
