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


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One graph cache for the session (`splitserve.export.onnx.cache`): a model exported again,
    in this process or a CLI child, is copied instead of traced again; none kept between sessions."""
    root = tmp_path_factory.mktemp("export-cache")
    os.environ["SPLITSERVE_EXPORT_CACHE"] = str(root)
    return root


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
    from splitserve.commands.log import log_pipeline

    return _export(task, arch, model_dir, log_pipeline(model_dir, task, None), name, **export)


def _export(task: str, arch: str, model_dir: Path, source: str, name: str, **export: Any) -> Exported:
    import mlflow

    from splitserve.export import export_bundle

    bundle = export_bundle(source, name=name, show_progress=False, **export)
    return Exported(task, arch, model_dir, source, bundle, mlflow.artifacts.download_artifacts(bundle))


# Models of the tasks transformers 5 removed (question-answering, text2text-generation,
# summarization, translation), logged with MLflow under transformers 4.57 (tests/data, with that
# version's pipeline answers: their oracle now): MLflow can no longer log such a model, and
# splitserve is how the ones logged before keep being served. (task, arch) -> the logged model.
LOGGED_UNDER_4 = Path(__file__).parent / "data" / "transformers-4.57"
REMOVED_TASK_MODELS = {
    ("question-answering", "bert"): "qa-bert",
    ("question-answering", "roberta"): "qa-roberta",
    ("text2text-generation", "t5"): "t5-text2text",
    ("translation_en_to_fr", "t5"): "t5-translation",
    ("summarization", "bart"): "bart-summarization",
}


LM_ARCHS = ("gpt2", "llama")  # decoder-only, for text-generation
SEQ2SEQ_ARCHS = ("t5", "bart")  # encoder-decoders, for text2text-generation, summarization, translation_xx_to_yy
GENERATION_LIMIT = 24  # export's max_new_tokens limit for the generation bundles built here


class TinyBundles:
    """A tiny random-weight model per (task, architecture), logged and exported the first time a
    test asks for it (`bundles[("fill-mask", "bert")]`, `bundles[("text-generation", "gpt2")]`,
    `bundles[("translation_en_to_fr", "t5")]`: REMOVED_TASK_MODELS), then shared by every test of
    the session."""

    def __init__(self, root: Path):
        self.root = root
        self.built: dict[tuple[str, str], Exported] = {}

    def __getitem__(self, key: tuple[str, str]) -> Exported:
        if key not in self.built:
            from zoo import save_tiny, save_tiny_lm

            task, arch = key
            root, export = self.root / f"{task}-{arch}", {}
            if key in REMOVED_TASK_MODELS:
                logged = LOGGED_UNDER_4 / REMOVED_TASK_MODELS[key]
                export = {"max_new_tokens_limit": GENERATION_LIMIT} if arch in SEQ2SEQ_ARCHS else {}
                self.built[key] = _export(task, arch, logged, str(logged), f"tiny-{task}-{arch}", **export)
                return self.built[key]
            if arch in LM_ARCHS:
                model_dir, export = save_tiny_lm(arch, root), {"max_new_tokens_limit": GENERATION_LIMIT}
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
