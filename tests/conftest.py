"""Shared fixtures: a real MLflow store in a temp folder, and serving bundles exported from
tiny random-weight models (two architectures per task, built on first use) and from the real
all-MiniLM-L6-v2.

Layout (mirrors the source tree): `unit/` the core without MLflow or models (seconds),
`tasks/test_<task>.py` each task against its oracles (with its own oracle adapter), and the tiers
and programs at the top level."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
sys.path.insert(0, str(Path(__file__).parent))

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


def _log_and_export(task: str, arch: str, model_dir: Path, name: str, **export: Any) -> Exported:
    from splitserve.export import export_bundle
    from splitserve.source import log_pipeline

    source = log_pipeline(model_dir, task, None)
    import mlflow

    bundle = export_bundle(source, name=name, show_progress=False, **export)
    return Exported(task, arch, model_dir, source, bundle, mlflow.artifacts.download_artifacts(bundle))


LM_ARCHS = ("gpt2", "llama")  # decoder-only, for text-generation
SEQ2SEQ_ARCHS = ("t5", "bart")  # encoder-decoders, for text2text-generation, summarization, translation_xx_to_yy
GENERATION_LIMIT = 24  # export's max_new_tokens limit for the generation bundles built here


class TinyBundles:
    """A tiny random-weight model per (task, architecture), logged and exported the first time a
    test asks for it (`bundles[("fill-mask", "bert")]`, `bundles[("text-generation", "gpt2")]`,
    `bundles[("translation_en_to_fr", "t5")]`), then shared by every test of the session."""

    def __init__(self, root: Path):
        self.root = root
        self.built: dict[tuple[str, str], Exported] = {}

    def __getitem__(self, key: tuple[str, str]) -> Exported:
        if key not in self.built:
            from zoo import save_tiny, save_tiny_lm, save_tiny_seq2seq

            task, arch = key
            root, export = self.root / f"{task}-{arch}", {}
            if arch in LM_ARCHS:
                model_dir, export = save_tiny_lm(arch, root), {"max_new_tokens_limit": GENERATION_LIMIT}
            elif arch in SEQ2SEQ_ARCHS:
                prefix_task = task if task.startswith("translation") else None
                model_dir = save_tiny_seq2seq(arch, root, prefix_task=prefix_task)
                export = {"max_new_tokens_limit": GENERATION_LIMIT}
            else:
                model_dir = save_tiny(task, arch, root)
            self.built[key] = _log_and_export(task, arch, model_dir, name=f"tiny-{task}-{arch}", **export)
        return self.built[key]


@pytest.fixture(scope="session")
def tiny_bundles(mlflow_store: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyBundles:
    return TinyBundles(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def minilm_bundle(mlflow_store: Path) -> Exported:
    from zoo import MINILM_DIR

    return _log_and_export("feature-extraction", "bert", Path(MINILM_DIR), name="all-MiniLM-L6-v2")
