"""Templates: the user's own pre/post logic around a task, shipped in the bundle.

A template is a Python module (a file, or a package directory) given at export. Its module-level
names are the contract, all optional:

- `preprocess(records, params) -> records`: runs before the task's encoding, on the caller's
  records as plain dicts (every field the caller sent, its own field names and id). It returns
  the records the task encodes; it may add, drop or rewrite fields and return more records than it
  got (one per chunk of a long document), each naming its input record by `id`.
- `postprocess(records, results, params) -> rows`: runs after decoding, on the caller's records and
  the task's results (the dicts the client returns for a bundle without a template, one per record
  the task encoded, each with that record's `id`). It returns rows: any number, each a dict of
  JSON values.
- `PARAMS = {"name": default}`: the template's own request params (their type is the default's);
  `params` above holds them, resolved.
- `DEFAULTS = {"task_param": value}`: defaults for the task's params (export adds them to the
  bundle's; `export --set` still wins).
- `EXAMPLES = [record, ...]`: records export runs the template on (default: the task's samples).
- `load(context)`: one-time set-up (`context.directory` holds the files shipped beside the module).

The same module runs in the preprocess and postprocess tiers, the inline gateway and the pyfunc.
A hook that raises `ValueError` or `KeyError` (bad input) answers INVALID_ARGUMENT; anything else
INTERNAL (the traceback goes to the server log).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from splitserve.core import params as P
from splitserve.core.bundle import Bundle
from splitserve.core.errors import InvalidInput, TemplateError, record_label
from splitserve.core.records import Record, to_records
from splitserve.tasks import get, result_from_pb, result_to_pb
from splitserve.tasks.base import Task


@dataclass(frozen=True)
class TemplateContext:
    """What a template's `load(context)` is given."""

    directory: Path  # the module's folder in the bundle (a package's own): files shipped beside it
    task: str
    model: str
    max_length: int
    tokenizer: Any  # the bundle's tokenizer


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or int(value) != value:
        raise InvalidInput(f"param {name!r}: expected an integer, got {value!r}")
    return int(value)


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"param {name!r}: expected a string, got {value!r}")
    return value


def _json(name: str, value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise InvalidInput(f"param {name!r}: expected a JSON value, got {value!r}") from None


def param_row(name: str, default: Any) -> P.Param:
    """A template param's row: its type is its default's."""
    if isinstance(default, bool):
        return P.Param(name, P.boolean, default, "boolean")
    if isinstance(default, int):
        return P.Param(name, _integer, default, "long")
    if isinstance(default, float):
        return P.Param(name, P.number, default, "double")
    if isinstance(default, str):
        return P.Param(name, _string, default, "string")
    if isinstance(default, (list, tuple)) and all(isinstance(v, str) for v in default):
        return P.Param(name, P.string_list, list(default), "string_list")
    if default is None:
        return P.Param(name, _json, None, "string")
    raise TypeError(
        f"PARAMS[{name!r}]: the default must be a bool, int, float, str, list of str or None, got {default!r}"
    )


# One import at a time: a tier process may load its stages in two threads (the inline gateway's
# preprocess and postprocess, a test's in-process tiers), and a module is in sys.modules before
# its body has run: the second thread would get it half-executed (without its PARAMS, say).
_IMPORTING = threading.Lock()


def import_module(directory: Path, name: str) -> ModuleType:
    """The template `name` (`name.py`, or a package `name/`) in `directory`, imported under a name
    of its own (two bundles' templates never share a module)."""
    with _IMPORTING:
        return _import_module(directory, name)


def _import_module(directory: Path, name: str) -> ModuleType:
    path = directory / f"{name}.py"
    package = directory / name / "__init__.py"
    unique = f"splitserve_template_{name}_{hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]}"
    if unique in sys.modules:
        return sys.modules[unique]
    if package.is_file():
        spec = importlib.util.spec_from_file_location(unique, package, submodule_search_locations=[str(package.parent)])
    elif path.is_file():
        spec = importlib.util.spec_from_file_location(unique, path)
    else:
        raise FileNotFoundError(f"template {name!r}: neither {path} nor {package} exists")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[unique]
        raise
    return module


class Template:
    """A loaded template, run around a task by the stages."""

    def __init__(self, module: ModuleType, task: Task):
        self.module, self.task = module, task
        self.name = module.__name__
        self.preprocess_hook: Callable[..., Any] | None = getattr(module, "preprocess", None)
        self.postprocess_hook: Callable[..., Any] | None = getattr(module, "postprocess", None)
        for hook, arity in ((self.preprocess_hook, 2), (self.postprocess_hook, 3)):
            if hook is not None and (not callable(hook) or len(inspect.signature(hook).parameters) != arity):
                raise TypeError(f"template: {getattr(hook, '__name__', hook)} must be a function of {arity} arguments")
        declared = getattr(module, "PARAMS", {}) or {}
        if not isinstance(declared, dict):
            raise TypeError("template: PARAMS must be a dict of name -> default")
        self.params = tuple(param_row(name, default) for name, default in declared.items())
        clash = sorted({p.name for p in self.params} & {p.name for p in task.params})
        if clash:
            raise TypeError(f"template: PARAMS {clash} are params of task {task.name} already")
        self.defaults: dict[str, Any] = dict(getattr(module, "DEFAULTS", {}) or {})
        self.examples: list[Any] | None = getattr(module, "EXAMPLES", None)

    @classmethod
    def load(cls, directory: Path, name: str, task: Task, context: TemplateContext) -> Template:
        template = cls(import_module(directory, name), task)
        setup = getattr(template.module, "load", None)
        if setup is not None:
            setup(context)
        return template

    def split(self, params: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """A request's params: (the task's, unresolved; the template's, resolved)."""
        params = dict(params or {})
        mine = {p.name for p in self.params}
        unknown = sorted(set(params) - mine - {p.name for p in self.task.params})
        if unknown:
            accepted = sorted(mine | {p.name for p in self.task.params})
            raise InvalidInput(f"unknown param(s) {unknown} for task {self.task.name}; accepted: {accepted}")
        own = P.resolve(self.params, {k: v for k, v in params.items() if k in mine}, {}, self.task.name)
        return {k: v for k, v in params.items() if k not in mine}, own

    def preprocess(self, records: list[Record], params: dict[str, Any]) -> list[Record]:
        """The records the task encodes, each naming a caller's record by id."""
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InvalidInput(f"record ids must be unique for a templated bundle; {dup!r} is given twice")
        if self.preprocess_hook is None:
            return records
        returned = self._call("preprocess", self.preprocess_hook, [r.as_dict() for r in records], params)
        if not isinstance(returned, list):
            raise TemplateError(f"template preprocess returned {type(returned).__name__}, not a list of records")
        try:
            task_records = to_records(returned, extra=True)
        except InvalidInput as exc:
            raise TemplateError(f"template preprocess returned a bad record: {exc}") from None
        known = set(ids)
        for i, record in enumerate(task_records):
            if record.id not in known:
                raise TemplateError(
                    f"template preprocess: {record_label(i, record.id)} names no input record by its 'id' "
                    f"(input ids: {ids[:5]}{'...' if len(ids) > 5 else ''})"
                )
        return task_records

    def rows(
        self, records: list[Record], task_records: list[Record], results: list[dict[str, Any]], params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The answer: the template's rows, from the task's results (as the client sees them)."""
        kind = self.task.result_kind
        seen = [
            {**result_from_pb(result_to_pb(self.task, r.id, res)), "id": r.source_id}
            for r, res in zip(task_records, results, strict=True)
        ]
        if self.postprocess_hook is None:
            return [{"id": s["id"], kind: s[kind]} for s in seen]
        rows = self._call("postprocess", self.postprocess_hook, [r.as_dict() for r in records], seen, params)
        return check_rows(rows)

    def _call(self, hook: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except (ValueError, KeyError) as exc:  # the template's word on the input
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise InvalidInput(f"template {hook}: {detail}") from exc


def check_rows(rows: Any) -> list[dict[str, Any]]:
    """Rows are dicts of JSON values (str, number, bool, None, lists, dicts)."""
    if not isinstance(rows, list):
        raise TemplateError(f"template postprocess returned {type(rows).__name__}, not a list of rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not all(isinstance(k, str) for k in row):
            raise TemplateError(f"template postprocess: row {i} is {type(row).__name__}, not a dict with string keys")
        for key, value in row.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise TemplateError(
                    f"template postprocess: row {i}, key {key!r}: {type(value).__name__} {str(value)[:40]!r} is not "
                    "a JSON value (str, number, bool, None, list, dict; no NaN)"
                ) from None
    return rows


def load_template(bundle: Bundle, tokenizer: Any) -> Template | None:
    """The bundle's template, loaded (its `load(context)` run), or None for a bundle without one."""
    config = bundle.config
    if config.template is None:
        return None
    package = bundle.template_dir / config.template
    directory = package if package.is_dir() else bundle.template_dir  # where the module's own files are
    context = TemplateContext(directory, config.task, config.name, config.max_length, tokenizer)
    return Template.load(bundle.template_dir, config.template, get(config.task), context)
