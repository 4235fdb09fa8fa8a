"""Shared fixtures: a real MLflow store in a temp folder, and serving bundles exported from
tiny random-weight models (two architectures per task) and from the real all-MiniLM-L6-v2."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
sys.path.insert(0, str(Path(__file__).parent))

TASKS = ("feature-extraction", "text-classification", "token-classification")
# Tasks with other records than one text, or several model rows per record (tests/test_parity_more_tasks.py).
MORE_TASKS = ("fill-mask", "question-answering", "zero-shot-classification")
ARCHS = ("bert", "roberta")  # WordPiece and byte-level BPE tokenizers


@dataclass
class Exported:
    task: str
    arch: str
    model_dir: Path
    source_uri: str
    bundle_uri: str  # the MLflow URI export printed
    local_dir: str  # the same bundle downloaded once, for tests that need not re-fetch it


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mlflow")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    import mlflow

    experiment = mlflow.create_experiment("splitserve-tests", artifact_location=(root / "artifacts").as_uri())
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment
    mlflow.set_experiment(experiment_id=experiment)
    return root


def _log_and_export(task: str, arch: str, model_dir: Path, name: str) -> Exported:
    from splitserve.export import export_bundle
    from splitserve.source import log_pipeline

    source = log_pipeline(model_dir, task, None)
    import mlflow

    bundle = export_bundle(source, name=name, show_progress=False)
    return Exported(task, arch, model_dir, source, bundle, mlflow.artifacts.download_artifacts(bundle))


def _tiny_bundles(tasks: tuple[str, ...], root: Path) -> dict[tuple[str, str], Exported]:
    """A tiny random-weight model per task and architecture, logged and exported."""
    from zoo import save_tiny

    out = {}
    for task in tasks:
        for arch in ARCHS:
            model_dir = save_tiny(task, arch, root / f"{task}-{arch}")
            out[(task, arch)] = _log_and_export(task, arch, model_dir, name=f"tiny-{task}-{arch}")
    return out


@pytest.fixture(scope="session")
def tiny_bundles(mlflow_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Exported]:
    return _tiny_bundles(TASKS, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def more_bundles(mlflow_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Exported]:
    return _tiny_bundles(MORE_TASKS, tmp_path_factory.mktemp("tiny-more"))


@pytest.fixture(scope="session")
def minilm_bundle(mlflow_store: Path) -> Exported:
    from zoo import MINILM_DIR

    return _log_and_export("feature-extraction", "bert", Path(MINILM_DIR), name="all-MiniLM-L6-v2")
