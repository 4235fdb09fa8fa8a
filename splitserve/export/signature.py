"""What the bundle's MLflow model carries besides its artifacts: the signature (its params and
their defaults), the code it runs and its requirements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splitserve.core.bundle import ServingConfig
from splitserve.core.params import Param
from splitserve.tasks.base import Task


def signature_for(task: Task, config: ServingConfig, extra: tuple[Param, ...] = ()) -> Any:
    """The bundle's MLflow signature: every param of its task (and the `extra` rows: a template's
    own) with the default a request without params gets (MLflow passes these to the pyfunc)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    defaults = task.signature_defaults(config)
    specs = []
    for param in (*task.params, *extra):
        value = param.validate(param.name, defaults[param.name]) if param.name in defaults else param.default
        if param.name == "max_length":  # None: the model's maximum
            value = value or config.max_length
        if param.kind == "string_list":
            # MLflow cannot say None for a list: [] stands for it (the validators read [] as none).
            specs.append(ParamSpec(param.name, "string", list(value or []), shape=(-1,)))
        elif param.kind == "string" and value is not None and not isinstance(value, str):
            specs.append(ParamSpec(param.name, "string", str(value).lower()))  # early_stopping: true/false/"never"
        else:
            specs.append(ParamSpec(param.name, param.kind, value))
    # No input schema: MLflow's enforcement would turn a list of strings into an empty DataFrame;
    # records are validated by splitserve itself, with messages naming the record and field.
    return ModelSignature(inputs=None, params=ParamSchema(specs))


def llm_signature(llm_task: str) -> Any:
    """MLflow's own signature of an `llm/v1/completions` or `llm/v1/chat` model (its OpenAI-style
    request and response schemas, no params), as `mlflow.transformers.log_model(task=...)` gives the
    source: `mlflow models serve` of the bundle then takes MLflow's requests for it."""
    from mlflow.transformers.llm_inference_utils import _SIGNATURE_FOR_LLM_INFERENCE_TASK

    return _SIGNATURE_FOR_LLM_INFERENCE_TASK[llm_task]


def code_paths() -> list[str]:
    """The packages the pyfunc needs, logged with the bundle so it loads where splitserve is not installed."""
    import model_svc
    import protos
    import splitserve

    return [str(Path(str(m.__file__)).parent) for m in (splitserve, protos, model_svc)]


def bundle_requirements() -> list[str]:
    from importlib.metadata import version

    names = (
        "onnxruntime",
        "transformers",
        "tokenizers",
        "numpy",
        "pandas",
        "grpcio",
        "protobuf",
        "pydantic-settings",
        "prometheus-client",
        "mlflow",
    )
    return [f"{n}=={version(n)}" for n in names]
