"""Per-request params: the machinery every task declares its params with.

A task lists its params as `Param` rows (name, validator, default, MLflow signature type) and
resolves a request's params with `resolve`: request > bundle defaults (set at export) > the row's
default. Validators mirror the transformers pipelines' own checks and raise `InvalidInput` naming
the param.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from splitserve.core.errors import InvalidInput, shown, shown_list

Validator = Callable[[str, Any], Any]
# The MLflow signature types of params (a list is "string_list": ParamSpec("string", shape=(-1,))).
KINDS = ("boolean", "long", "double", "string", "string_list")


@dataclass(frozen=True)
class Param:
    """One request param: its validator, its default (None: the pipeline's own behaviour) and how
    the bundle's MLflow signature types it."""

    name: str
    validate: Validator
    default: Any
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"param {self.name!r}: kind {self.kind!r} is not one of {KINDS}")


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidInput(f"param {name!r}: expected true or false, got {shown(value)}")


def optional_boolean(name: str, value: Any) -> bool | None:
    return None if value is None else boolean(name, value)


def positive_int(name: str, value: Any) -> int:
    if not _number(value) or value != int(value) or value < 1:
        raise InvalidInput(f"param {name!r}: expected a positive integer, got {shown(value)}")
    return int(value)


def optional_positive_int(name: str, value: Any) -> int | None:
    return None if value is None else positive_int(name, value)


def optional_non_negative_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not _number(value) or value != int(value) or value < 0:
        raise InvalidInput(f"param {name!r}: expected a non-negative integer, got {shown(value)}")
    return int(value)


def positive_float(name: str, value: Any) -> float:
    if not _number(value) or not value > 0:
        raise InvalidInput(f"param {name!r}: expected a positive number, got {shown(value)}")
    return float(value)


def probability(name: str, value: Any) -> float:
    if not _number(value) or not 0 < value <= 1:
        raise InvalidInput(f"param {name!r}: expected a number in (0, 1], got {shown(value)}")
    return float(value)


def number(name: str, value: Any) -> float:
    if not _number(value):
        raise InvalidInput(f"param {name!r}: expected a number, got {shown(value)}")
    return float(value)


def choice(*choices: str) -> Validator:
    def check(name: str, value: Any) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        raise InvalidInput(f"param {name!r}: expected one of {list(choices)}, got {shown(value)}")

    return check


def string_list(name: str, value: Any) -> list[str]:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidInput(f"param {name!r}: expected a list of strings, got {shown(value)}")


def at_most(limit: int, validate: Validator, what: str) -> Validator:
    """`validate`, then refuse values over `limit` ("{value} {what}; at most {limit}")."""

    def check(name: str, value: Any) -> Any:
        checked = validate(name, value)
        if checked is not None and checked > limit:
            raise InvalidInput(f"param {name!r}: {checked} {what}; at most {limit}")
        return checked

    return check


def resolve(
    spec: Iterable[Param], params: dict[str, Any] | None, defaults: dict[str, Any], task: str
) -> dict[str, Any]:
    """The complete, validated params of one request: request > bundle defaults > the row's default."""
    rows = {p.name: p for p in spec}
    params = dict(params or {})
    unknown = sorted(set(params) - set(rows))
    if unknown:
        raise InvalidInput(f"unknown param(s) {shown_list(unknown)} for task {task}; accepted: {sorted(rows)}")
    resolved: dict[str, Any] = {}
    for name, row in rows.items():
        if name in params:
            resolved[name] = row.validate(name, params[name])
        elif name in defaults:
            resolved[name] = row.validate(name, defaults[name])
        else:
            resolved[name] = row.default
    return resolved


def check_within(resolved: dict[str, Any], name: str, maximum: int, what: str = "the model's maximum") -> None:
    """Refuse a resolved length param past a maximum, naming both."""
    if resolved[name] is not None and resolved[name] > maximum:
        raise InvalidInput(f"param {name!r}: {resolved[name]} exceeds {what} of {maximum}")
