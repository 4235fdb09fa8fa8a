"""Shared fixtures: a real MLflow store in a temp folder, and serving bundles exported from
tiny random-weight models (two architectures per task, built on first use) and from the real
all-MiniLM-L6-v2; the layers' markers, applied by folder.

Layout (mirrors the source tree; helpers in `tests/support/`):
- `unit/`     the core without MLflow, models or servers (seconds): the fast layer
- `tasks/`    `test_<task>.py`, each task against its oracles (with its own oracle adapter)
- `tiers/`    the tiers' servers: errors, limits, batching, health, TLS, tracing, separate hosts
- `gateway/`  the gateway's doors (REST, OpenAI), several bundles, rollouts, rebalancing, the client
- `export/`   `splitserve export`: the graphs, int8, MLflow fidelity, templates, the graph cache
- `cli/`      the CLI in fresh processes: `up`, `bench`, `k8s`, the first hour of a new user
- `faults/`   the fault suite: replicas killed, overload, skew and fuzz

`scripts/test.sh --fast` runs the `fast` layer (`-m fast`); `scripts/test.sh` runs everything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.bundles import Exported, TinyBundles, log_and_export

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

TESTS = Path(__file__).parent
# The layers in the order they run: the fast one first (a broken core fails in the first minute of the
# full run too), the fault suite last (its session-long `splitserve up` lives only while it runs).
LAYERS = ("unit", "tasks", "export", "tiers", "gateway", "cli", "faults")
FAST_LAYERS = {"unit"}  # no MLflow, no model export, no server started: `scripts/test.sh --fast`


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its layer (its folder: `unit`, `tasks`, `tiers`, `gateway`, `export`,
    `cli`, `faults`) and with `fast` or `slow` (`pytest -m fast`, `pytest -m "tiers or gateway"`),
    and the layers run in LAYERS' order (a stable sort: each module's tests stay together)."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    for item in items:
        layer = item.path.relative_to(TESTS).parts[0]
        item.add_marker(layer)
        item.add_marker("fast" if layer in FAST_LAYERS else "slow")
    items.sort(key=lambda item: rank.get(item.path.relative_to(TESTS).parts[0], len(rank)))


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


@pytest.fixture(scope="session")
def tiny_bundles(mlflow_store: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyBundles:
    return TinyBundles(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def minilm_bundle(mlflow_store: Path) -> Exported:
    from tests.support.zoo.tokenizer import MINILM_DIR

    return log_and_export("feature-extraction", "bert", Path(MINILM_DIR), name="all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def tiny_whisper(mlflow_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A tiny Whisper (`tests.support.zoo.speech`) logged and exported once for the session: the
    speech-recognition task's tests and the audio tiers' share it."""
    from tests.support.zoo.speech import save_tiny_whisper

    model_dir = save_tiny_whisper(tmp_path_factory.mktemp("whisper"))
    return log_and_export("automatic-speech-recognition", "whisper", model_dir, name="tiny-whisper")
