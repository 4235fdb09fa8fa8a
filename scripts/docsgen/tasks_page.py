"""The tasks' params page (docs/reference/tasks.md) from the task registry."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

from docsgen import HEADER, REGENERATE, _cell, _code, _json
from docsgen.cli_page import _anchor

KIND_TYPES = {"boolean": "boolean", "long": "integer", "double": "number", "string": "string", "string_list": "list"}
# What the shared validators of `splitserve.core.params` accept, by name.
VALIDATORS = {
    "boolean": "true or false",
    "optional_boolean": "true, false or null",
    "positive_int": "an integer ≥ 1",
    "optional_positive_int": "an integer ≥ 1, or null",
    "optional_non_negative_int": "an integer ≥ 0, or null",
    "positive_float": "a number > 0",
    "probability": "a number in (0, 1]",
    "number": "a number",
    "string_list": "a list of strings",
}


def _accepts(validate: Callable[..., Any]) -> str:
    cells = dict(zip(validate.__code__.co_freevars, validate.__closure__ or (), strict=False))
    if "choices" in cells:
        return "one of " + ", ".join(f"`{c}`" for c in cells["choices"].cell_contents)
    if {"limit", "validate", "what"} <= set(cells):
        inner = _accepts(cells["validate"].cell_contents)
        return f"{inner}; at most {cells['limit'].cell_contents} {cells['what'].cell_contents}"
    if validate.__name__ in VALIDATORS and validate.__module__.endswith("core.params"):
        return VALIDATORS[validate.__name__]
    doc = inspect.getdoc(validate)
    if doc:  # "`name`: what it takes." or "what it takes."
        return _cell(re.sub(r"^`[^`]+`:\s*", "", doc.split("\n\n")[0]))
    return VALIDATORS.get(validate.__name__, "")


def _section(name: str, body: str) -> str:
    """A block the hand-written pages include with pymdownx.snippets (`file.md:name`)."""
    return f"<!-- --8<-- [start:{name}] -->\n{body}<!-- --8<-- [end:{name}] -->\n"


def tasks_page() -> str:
    registry = importlib.import_module("splitserve.tasks")
    tasks = list(registry.TASKS)
    out = [
        HEADER.format(cmd=REGENERATE, source="the task registry, `splitserve.tasks.TASKS`"),
        "# Tasks reference\n\n",
        "Every task splitserve serves, one module each under `splitserve/tasks/`, and the request params each "
        "takes (per request: `params`; as a bundle default: `splitserve export --set NAME=VALUE`). A param's "
        "default applies when neither the request nor the bundle sets it; `null` means the pipeline's own "
        "behaviour (the [tasks guide](../tasks.md) says what that is). Unknown params are refused "
        "(`INVALID_ARGUMENT`, naming them).\n\n",
        "| task | also accepted as | record fields (required in bold) | result | streams | ONNX graph | int8 gate |\n",
        "|---|---|---|---|---|---|---|\n",
    ]
    for task in tasks:
        fields = ", ".join(f"**`{f}`**" if f in task.required else f"`{f}`" for f in task.fields)
        gate = ", ".join(task.export.int8_gate) or "no int8"
        out.append(
            f"| [{task.name}](#{_anchor(task.name)}) | {', '.join(f'`{a}`' for a in task.aliases)} | {fields} "
            f"| `{task.result_kind}` | {'yes' if task.streams else ''} | {task.export.parity} | {gate} |\n"
        )
    out.append(
        "\nMLflow's `translation_xx_to_yy` task names are translation. *ONNX graph*: the graph family "
        "`splitserve export` writes and how it checks it against PyTorch. *int8 gate*: the quality metrics an "
        "`--quantize int8` export must keep.\n"
    )
    for task in tasks:
        out.append(f"\n## {task.name} {{#{_anchor(task.name)}}}\n\n")
        rows = "| param | type | default | accepts |\n|---|---|---|---|\n"
        for p in task.params:
            rows += f"| `{p.name}` | {KIND_TYPES.get(p.kind, p.kind)} | {_code(_json(p.default))} | {_accepts(p.validate)} |\n"
        if not task.params:
            rows = "No params.\n"
        out.append(_section(task.name, rows))
    return "".join(out)
