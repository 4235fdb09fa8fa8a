"""Download parts of a serving bundle into the bundle cache with MLflow:
`python -m splitserve.core.fetch URI CACHE_ROOT [PART...]`.

Run as a child process by `splitserve.core.cache.fetch` (which holds the cache's lock meanwhile) so
that tier processes never import MLflow. Prints the cache entry (`CACHE_ROOT/<fingerprint>`, the
bundle root holding `artifacts/`) as its last line; on failure, one `error: ...` line on stderr.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from splitserve.core.bundle import ARTIFACT_DIR, CONFIG_FILE, OPTIONAL_PARTS, ServingConfig
from splitserve.core.cache import FINGERPRINT
from splitserve.core.errors import BundleError


def _stores() -> tuple[str, str]:
    """(tracking URI, registry URI) as MLflow resolves them: the env vars, else its defaults."""
    import mlflow

    return mlflow.get_tracking_uri(), mlflow.get_registry_uri()


def store_of(uri: str) -> str:
    """Where MLflow looks `uri` up, as messages name it: the registry for models:/, else the tracking store."""
    tracking, registry = _stores()
    if uri.startswith("models:/") and registry != tracking:
        return f"the MLflow model registry {registry}"
    return f"the MLflow tracking store {tracking}"


def missing_store(uri: str) -> str | None:
    """Why `uri` cannot be looked up without creating a store: a models:/ or runs:/ URI whose store is
    a sqlite file that does not exist (opening it would leave an empty database behind)."""
    if not uri.startswith(("models:/", "runs:/")):
        return None
    tracking, registry = _stores()
    store = registry if uri.startswith("models:/") else tracking
    if not store.startswith("sqlite:///"):
        return None
    path = Path(store.removeprefix("sqlite:///").split("?", 1)[0])
    if path.exists():
        return None
    return (
        f"there is no MLflow tracking store at sqlite:///{path.resolve()} (no such file): set MLFLOW_TRACKING_URI "
        f"to the store {uri} was logged to"
    )


def fetch(uri: str, root: Path, parts: list[str]) -> Path:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    missing = missing_store(uri)
    if missing:
        raise BundleError(f"cannot read bundle {uri!r}: {missing}")
    try:
        repo = get_artifact_repository(uri)
    except Exception as exc:  # a models:/ URI is resolved here: not in the registry
        said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(f"cannot read bundle {uri!r}: {said} (looked up in {store_of(uri)})") from None
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        try:
            config_path = Path(repo.download_artifacts(f"{ARTIFACT_DIR}/{CONFIG_FILE}", str(staging)))
        except Exception as exc:
            raise BundleError(_not_a_bundle(repo, uri, exc)) from None
        config = ServingConfig.from_json(config_path.read_text())
        fingerprint = config.fingerprint
        if not FINGERPRINT.fullmatch(fingerprint):
            raise BundleError(f"{uri}: serving.json has no valid fingerprint")
        artifacts = root / fingerprint / ARTIFACT_DIR
        artifacts.mkdir(parents=True, exist_ok=True)
        if not (artifacts / CONFIG_FILE).exists():
            os.replace(config_path, artifacts / CONFIG_FILE)
        for part in parts:
            if part in OPTIONAL_PARTS and part not in config.artifacts:
                continue
            if not (artifacts / part).exists():  # parts arrive whole (renamed into place) or not at all
                os.replace(repo.download_artifacts(f"{ARTIFACT_DIR}/{part}", str(staging)), artifacts / part)
        return artifacts.parent
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _not_a_bundle(repo: object, uri: str, exc: Exception) -> str:
    """Why `uri` has no serving.json, and what to do."""
    try:
        names = {Path(f.path).name for f in repo.list_artifacts("")}  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the URI itself does not resolve
        said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"cannot read bundle {uri!r}: {said} (looked up in {store_of(uri)})"
    if "MLmodel" in names:
        return (
            f"{uri} is a logged model, not a serving bundle (it has no {ARTIFACT_DIR}/{CONFIG_FILE}): "
            f"run `splitserve export {uri}` first and serve the URI it prints"
        )
    return f"{uri} is not a serving bundle (no {ARTIFACT_DIR}/{CONFIG_FILE}); `splitserve export` makes one"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m splitserve.core.fetch URI CACHE_ROOT [PART...]", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        print(fetch(argv[0], Path(argv[1]), argv[2:]))
    except Exception as exc:  # noqa: BLE001 - one line for the parent to report
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
