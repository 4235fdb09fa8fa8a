"""Where MLflow keeps things when the user has not said: a sqlite store and an artifact
folder under the working directory. Set once per command, before MLflow is imported, and
inherited by every child process."""

from __future__ import annotations

import os
from pathlib import Path


def ensure_tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return uri


def registered_uri(model_info: object, registered_name: str | None) -> str:
    """`models:/NAME/VERSION` when registered, else the logged model's own URI."""
    version = getattr(model_info, "registered_model_version", None)
    if registered_name and version is not None:
        return f"models:/{registered_name}/{version}"
    return str(model_info.model_uri)  # type: ignore[attr-defined]
