"""The settings reference page (docs/reference/settings.md) from the pydantic settings classes."""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any

from docsgen import HEADER, REGENERATE, REPO, _cell, _code, _json
from docsgen.cli_page import _anchor, _subcommands, find_parser


def settings_classes() -> list[type]:
    """Every concrete settings class: the subclasses of `ServerSettings` that nothing subclasses,
    after importing each tier's settings module (`*_svc/settings.py`)."""
    base = importlib.import_module("splitserve.core.settings").ServerSettings
    for path in sorted(REPO.glob("*_svc/settings.py")):
        importlib.import_module(f"{path.parent.name}.settings")
    found: list[type] = []
    todo = [base]
    while todo:
        cls = todo.pop(0)
        subs = [s for s in cls.__subclasses__() if s.__module__.split(".")[0] != "tests"]
        if not subs and cls is not base:
            found.append(cls)
        todo += subs
    return sorted(found, key=lambda c: (_prefix(c) == "SPLITSERVE_GATEWAY_", _tier_order(c), c.__name__))


def _prefix(cls: type) -> str:
    return str(cls.model_config.get("env_prefix", ""))  # type: ignore[attr-defined]


def _tier_order(cls: type) -> int:
    order = ("SPLITSERVE_PRE_", "SPLITSERVE_MODEL_", "SPLITSERVE_POST_")
    return order.index(_prefix(cls)) if _prefix(cls) in order else len(order)


def _declared_in(cls: type, name: str) -> type:
    """The class (in `cls`'s MRO) that declares field `name` last."""
    for klass in cls.__mro__:
        if name in getattr(klass, "__annotations__", {}):
            return klass
    return cls


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(_json(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " \\| ".join(_type(a) for a in args) + (
            " or unset" if len(args) < len(typing.get_args(annotation)) else ""
        )
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return f"list of {_type(item)}"
    return getattr(annotation, "__name__", str(annotation))


def settings_page() -> str:
    from pydantic_core import PydanticUndefined

    classes = settings_classes()
    out = [
        HEADER.format(cmd=REGENERATE, source="the subclasses of `splitserve.core.settings.ServerSettings`"),
        "# Settings reference\n\n",
        "Every server reads one settings class. Each field is a command-line flag of its `splitserve serve-*` "
        "command (`max_records` is `--max-records`; a boolean also takes `--no-...`) and an environment variable "
        "(the class's prefix + the field's name). Precedence: flag > environment > default. The processes "
        "`splitserve up` starts inherit its environment.\n\n",
        "| class | command | environment prefix | defined in |\n|---|---|---|---|\n",
    ]
    commands = _commands_of_settings()
    for cls in classes:
        out.append(
            f"| [`{cls.__name__}`](#{_anchor(cls.__name__)}) | {', '.join(f'`{c}`' for c in commands.get(cls, ())) or ''} "
            f"| `{_prefix(cls)}` | `{cls.__module__}` |\n"
        )
    for cls in classes:
        prefix = _prefix(cls)
        out.append(f"\n## {cls.__name__} {{#{_anchor(cls.__name__)}}}\n\n")
        doc = inspect.getdoc(cls)
        if doc and doc != inspect.getdoc(cls.__mro__[1]):
            out.append(f"{doc}\n\n")
        out.append("| flag | environment variable | type | default | declared in | |\n|---|---|---|---|---|---|\n")
        for name, info in cls.model_fields.items():  # type: ignore[attr-defined]
            if info.default is PydanticUndefined and info.default_factory is None:
                default, flag = "required", name.upper()
            else:
                value = info.default if info.default_factory is None else info.default_factory()
                default = "" if value is None else _code(_json(value))
                flag = "--" + name.replace("_", "-")
            owner = _declared_in(cls, name).__name__
            out.append(
                f"| `{flag}` | `{prefix}{name.upper()}` | {_type(info.annotation)} | {default} | {owner} | "
                f"{_cell(info.description or '')} |\n"
            )
    return "".join(out)


def _commands_of_settings() -> dict[type, list[str]]:
    """Which `splitserve` commands take each settings class's fields as flags: those whose flags'
    help names the class's environment variables."""
    parser = find_parser()
    out: dict[type, list[str]] = {}
    for cls in settings_classes():
        for sub, _ in _subcommands(parser):
            if any(f"[env {_prefix(cls)}" in (a.help or "") for a in sub._actions):
                out.setdefault(cls, []).append(sub.prog)
    return out
