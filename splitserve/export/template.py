"""A template at export: copied into the bundle (`artifacts/template/`, hashed with the other
parts), imported once to check its contract, and run on sample records through the whole
in-process pipeline, so that a broken template fails the export with its own message and line."""

from __future__ import annotations

import shutil
import traceback
from pathlib import Path
from typing import Any

from splitserve.core.bundle import Bundle
from splitserve.core.errors import ExportError
from splitserve.export.samples import SAMPLE_TEXTS
from splitserve.stages.template import Template, import_module
from splitserve.tasks.base import Task


def stage_template(source: Path, dest: Path) -> str:
    """Copy the template (a `.py` file, or a package directory) into `dest`; returns its module name."""
    source = Path(source)
    if source.is_file() and source.suffix == ".py":
        name = source.stem
        dest.mkdir(parents=True)
        shutil.copy2(source, dest / source.name)
    elif source.is_dir() and (source / "__init__.py").is_file():
        name = source.name
        shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        raise ExportError(f"--template {source}: expected a .py file or a package directory (with __init__.py)")
    if not name.isidentifier():
        raise ExportError(f"--template {source}: {name!r} is not a Python module name")
    return name


def read_template(directory: Path, name: str, task: Task) -> Template:
    """Import the template and check its contract (hooks, PARAMS, DEFAULTS); ExportError otherwise."""
    try:
        template = Template(import_module(directory, name), task)
        task.validate_defaults(template.defaults)
    except Exception as exc:  # noqa: BLE001 - the user's code: any error becomes one clear line
        raise ExportError(f"template {name!r} cannot be used: {describe(exc, directory)}") from None
    return template


def check_template(bundle: Bundle, template: Template, task: Task) -> int:
    """Run the bundle, template included, in process on the template's EXAMPLES (else the task's
    sample texts); returns the rows made. ExportError with the template's message and line."""
    from splitserve.inprocess import InProcessPipeline

    examples: list[Any] | None = template.examples
    if examples is None and task.required == ("text",):
        examples = [{"id": str(i), "text": t} for i, t in enumerate(SAMPLE_TEXTS[:4])]
    if not examples:
        return 0
    try:
        return len(InProcessPipeline(bundle).predict(examples))
    except Exception as exc:  # noqa: BLE001 - the user's code: any error becomes one clear line
        raise ExportError(
            f"template {bundle.config.template!r} failed on its sample records: {describe(exc, bundle.template_dir)}"
        ) from None


def describe(exc: BaseException, directory: Path) -> str:
    """`ValueError: message (at my_rows.py:12)`: the innermost line of the template's own code."""
    root = directory.resolve()

    def inside(filename: str) -> Path | None:
        path = Path(filename).resolve()
        return path.relative_to(root) if path.is_relative_to(root) else None

    places = []
    for error in (exc, exc.__cause__ or exc.__context__):  # e.g. InvalidInput raised from the template's ValueError
        if error is None:
            continue
        if isinstance(error, SyntaxError) and error.filename and inside(error.filename):
            places.append((inside(error.filename), error.lineno))
        places += [
            (inside(f.filename), f.lineno) for f in traceback.extract_tb(error.__traceback__) if inside(f.filename)
        ]
    where = f" (at {places[-1][0]}:{places[-1][1]})" if places else ""
    return f"{type(exc).__name__}: {exc}{where}"
