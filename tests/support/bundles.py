"""Serving bundles exported from tiny random-weight models (two architectures per task, built on
first use) and the models logged under transformers 4.57 (tests/data): what the session fixtures
of tests/conftest.py hand out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHS = ("bert", "roberta")  # WordPiece and byte-level BPE tokenizers


@dataclass
class Exported:
    task: str
    arch: str
    model_dir: Path
    source_uri: str
    bundle_uri: str  # the MLflow URI export printed
    local_dir: str  # the same bundle downloaded once, for tests that need not re-fetch it


def log_and_export(task: str, arch: str, model_dir: Path, name: str, **export: Any) -> Exported:
    from splitserve.commands.log import log_pipeline

    return export_logged(task, arch, model_dir, log_pipeline(model_dir, task, None), name, **export)


def export_logged(task: str, arch: str, model_dir: Path, source: str, name: str, **export: Any) -> Exported:
    import mlflow

    from splitserve.export import export_bundle

    bundle = export_bundle(source, name=name, show_progress=False, **export)
    return Exported(task, arch, model_dir, source, bundle, mlflow.artifacts.download_artifacts(bundle))


# Models of the tasks transformers 5 removed (question-answering, text2text-generation,
# summarization, translation), logged with MLflow under transformers 4.57 (tests/data, with that
# version's pipeline answers: their oracle now): MLflow can no longer log such a model, and
# splitserve is how the ones logged before keep being served. (task, arch) -> the logged model.
LOGGED_UNDER_4 = Path(__file__).parents[1] / "data" / "transformers-4.57"
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
            from tests.support.zoo.encoders import save_tiny
            from tests.support.zoo.generators import save_tiny_lm

            task, arch = key
            root, export = self.root / f"{task}-{arch}", {}
            if key in REMOVED_TASK_MODELS:
                logged = LOGGED_UNDER_4 / REMOVED_TASK_MODELS[key]
                export = {"max_new_tokens_limit": GENERATION_LIMIT} if arch in SEQ2SEQ_ARCHS else {}
                self.built[key] = export_logged(task, arch, logged, str(logged), f"tiny-{task}-{arch}", **export)
                return self.built[key]
            if arch in LM_ARCHS:
                model_dir, export = save_tiny_lm(arch, root), {"max_new_tokens_limit": GENERATION_LIMIT}
            else:
                model_dir = save_tiny(task, arch, root)
            self.built[key] = log_and_export(task, arch, model_dir, name=f"tiny-{task}-{arch}", **export)
        return self.built[key]
