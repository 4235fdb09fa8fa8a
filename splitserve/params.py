"""Per-request params: which each task accepts, their defaults, and validation.

Params mirror the transformers pipelines' own call arguments. Defaults come from the bundle
(`ServingConfig.defaults`, set at export) and then from the pipeline's defaults. Both the
preprocess and postprocess tiers resolve the full set, so an unknown or invalid param is
refused by the first tier that sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from splitserve.errors import InvalidInput

Validator = Callable[[str, Any], Any]


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidInput(f"param {name!r}: expected true or false, got {value!r}")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise InvalidInput(f"param {name!r}: expected a positive integer, got {value!r}")
    return int(value)


def _optional_positive_int(name: str, value: Any) -> int | None:
    return None if value is None else _positive_int(name, value)


def _choice(*choices: str) -> Validator:
    def check(name: str, value: Any) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        raise InvalidInput(f"param {name!r}: expected one of {list(choices)}, got {value!r}")

    return check


def _string_list(name: str, value: Any) -> list[str]:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidInput(f"param {name!r}: expected a list of strings, got {value!r}")


# name -> (validator, default). A default of None means "the pipeline's own behaviour".
COMMON: dict[str, tuple[Validator, Any]] = {
    "truncation": (_bool, True),
    "max_length": (_optional_positive_int, None),
}

TASK_PARAMS: dict[str, dict[str, tuple[Validator, Any]]] = {
    "feature-extraction": {
        "pooling": (_choice("none", "mean", "cls"), "none"),
        "normalize": (_bool, False),
    },
    "text-classification": {
        "top_k": (_optional_positive_int, 1),
        "function_to_apply": (_choice("default", "softmax", "sigmoid", "none"), "default"),
    },
    "token-classification": {
        "aggregation_strategy": (_choice("none", "simple", "first", "average", "max"), "none"),
        "ignore_labels": (_string_list, ["O"]),
    },
}

TASKS = tuple(TASK_PARAMS)


def accepted(task: str) -> dict[str, tuple[Validator, Any]]:
    if task not in TASK_PARAMS:
        raise InvalidInput(f"task {task!r} is not supported; supported tasks: {list(TASKS)}")
    return {**COMMON, **TASK_PARAMS[task]}


def resolve(task: str, params: dict[str, Any] | None, defaults: dict[str, Any], max_length: int) -> dict[str, Any]:
    """The complete, validated params of one request: request > bundle defaults > pipeline."""
    spec = accepted(task)
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise InvalidInput(f"unknown param(s) {unknown} for task {task}; accepted: {sorted(spec)}")
    resolved: dict[str, Any] = {}
    for name, (validate, default) in spec.items():
        if name in params:
            resolved[name] = validate(name, params[name])
        elif name in defaults:
            resolved[name] = validate(name, defaults[name])
        else:
            resolved[name] = default
    if resolved["max_length"] is None:
        resolved["max_length"] = max_length
    elif resolved["max_length"] > max_length:
        raise InvalidInput(f"param 'max_length': {resolved['max_length']} exceeds the model's maximum of {max_length}")
    return resolved


def validate_defaults(task: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Check bundle defaults at export time; returns them unchanged."""
    resolve(task, defaults, {}, max_length=10**9)
    return defaults
