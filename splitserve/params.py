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


def _optional_non_negative_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise InvalidInput(f"param {name!r}: expected a non-negative integer, got {value!r}")
    return int(value)


def _optional_strings(name: str, value: Any) -> list[str] | None:
    """fill-mask `targets`: a string or a list of strings; an empty list means none (the
    default in the bundle's MLflow signature, which cannot say None for a list)."""
    if value is None:
        return None
    targets = [value] if isinstance(value, str) else _string_list(name, value)
    return targets or None


def _labels(name: str, value: Any) -> list[str] | None:
    """zero-shot `candidate_labels`: a list of strings, or one comma-separated string (as the
    pipeline parses it); an empty list means none (records then carry their own)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [label.strip() for label in value.split(",") if label.strip()]
    return _string_list(name, value) or None


def _optional_bool(name: str, value: Any) -> bool | None:
    return None if value is None else _bool(name, value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise InvalidInput(f"param {name!r}: expected a positive number, got {value!r}")
    return float(value)


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise InvalidInput(f"param {name!r}: expected a number in (0, 1], got {value!r}")
    return float(value)


MAX_BEAMS = 16


def _num_beams(name: str, value: Any) -> int:
    beams = _positive_int(name, value)
    if beams > MAX_BEAMS:
        raise InvalidInput(f"param {name!r}: {beams} beams; at most {MAX_BEAMS}")
    return beams


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"param {name!r}: expected a number, got {value!r}")
    return float(value)


def _early_stopping(name: str, value: Any) -> bool | str:
    """transformers' `early_stopping`: true, false or "never"."""
    if isinstance(value, bool) or value == "never":
        return value
    if value in ("true", "false"):  # as MLflow's string-typed signature param sends them
        return value == "true"
    raise InvalidInput(f'param {name!r}: expected true, false or "never", got {value!r}')


def _stop(name: str, value: Any) -> list[str]:
    """text-generation `stop`: a string or a list of non-empty strings."""
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else _string_list(name, value)
    if any(not s for s in stops):
        raise InvalidInput(f"param {name!r}: stop sequences must not be empty")
    return stops


def _template(name: str, value: Any) -> str:
    """zero-shot `hypothesis_template`: must place the label somewhere, as the pipeline checks."""
    if isinstance(value, str):
        try:
            placed = value.format("label") != value
        except (IndexError, KeyError, ValueError):
            placed = False
        if placed:
            return value
    raise InvalidInput(f"param {name!r}: expected a string with one {{}} where the label goes, got {value!r}")


# name -> (validator, default). A default of None means "the pipeline's own behaviour".
COMMON: dict[str, tuple[Validator, Any]] = {
    "truncation": (_bool, True),
    "max_length": (_optional_positive_int, None),
}

# The decoding params of every generation task (`generate`'s, as the pipelines take them);
# defaults of None come from the model's generation_config (see `resolve_for`).
GENERATE_PARAMS: dict[str, tuple[Validator, Any]] = {
    "max_new_tokens": (_optional_positive_int, None),
    "do_sample": (_optional_bool, None),
    "temperature": (_positive_float, 1.0),
    "top_k": (_optional_non_negative_int, None),  # 0 or null: no top-k filter
    "top_p": (_probability, 1.0),
    "repetition_penalty": (_positive_float, 1.0),
    "seed": (_optional_non_negative_int, None),  # null: a fresh seed per request
    "stop": (_stop, []),
    "num_beams": (_num_beams, None),
    "length_penalty": (_float, None),
    "early_stopping": (_early_stopping, None),
    "no_repeat_ngram_size": (_optional_non_negative_int, None),
    "min_new_tokens": (_optional_non_negative_int, None),
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
    "fill-mask": {
        "top_k": (_positive_int, 5),
        "targets": (_optional_strings, None),
    },
    # Long contexts are split into overlapping windows (max_seq_len, doc_stride) instead of
    # truncated, so the common truncation/max_length params do not apply (see OWN_LENGTH).
    "question-answering": {
        "top_k": (_positive_int, 1),
        "max_answer_len": (_positive_int, 15),
        "handle_impossible_answer": (_bool, False),
        "align_to_words": (_bool, True),
        "max_seq_len": (_optional_positive_int, None),  # None: min(the model's max length, 384)
        "doc_stride": (_optional_non_negative_int, None),  # None: min(max_seq_len // 2, 128)
        "max_question_len": (_positive_int, 64),  # accepted as the pipeline does; fast tokenizers ignore it
    },
    "zero-shot-classification": {
        "candidate_labels": (_labels, None),  # for records that carry none of their own
        "hypothesis_template": (_template, "This example is {}."),
        "multi_label": (_bool, False),
    },
    # Defaults of None are filled from the bundle's `generation` defaults (the model's
    # generation_config as the pipeline resolves it), see `resolve_for`.
    "text-generation": {
        **GENERATE_PARAMS,
        "return_full_text": (_optional_bool, None),  # null: true, false with a prompt_template (MLflow)
    },
    # Encoder-decoders (T5, BART): the same decoding params, without return_full_text.
    **dict.fromkeys(("text2text-generation", "summarization", "translation"), GENERATE_PARAMS),
}

TASKS = tuple(TASK_PARAMS)
GENERATION_TASKS = ("text-generation", "text2text-generation", "summarization", "translation")
ENCODER_DECODER_TASKS = GENERATION_TASKS[1:]
OWN_LENGTH = {"question-answering", *GENERATION_TASKS}  # tasks without the COMMON params
# Generation params whose defaults come from the model's generation_config, and the value each
# takes when neither the model nor the request sets it (max_new_tokens: see `resolve_for`).
GENERATION_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": None,
    "do_sample": False,
    "temperature": 1.0,
    "top_k": None,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "num_beams": 1,
    "length_penalty": 1.0,
    "early_stopping": False,
    "no_repeat_ngram_size": 0,
    "min_new_tokens": 0,
}

# The MLflow param type of each validator (a list type is "string_list"); others are "string".
_KINDS: dict[Validator, str] = {
    _bool: "boolean",
    _optional_bool: "boolean",
    _positive_float: "double",
    _probability: "double",
    _num_beams: "long",
    _float: "double",
    _stop: "string_list",
    _positive_int: "long",
    _optional_positive_int: "long",
    _optional_non_negative_int: "long",
    _string_list: "string_list",
    _optional_strings: "string_list",
    _labels: "string_list",
}


def kind_of(validator: Validator) -> str:
    """How the bundle's MLflow signature types a param: boolean, long, string or string_list."""
    return _KINDS.get(validator, "string")


def accepted(task: str) -> dict[str, tuple[Validator, Any]]:
    if task not in TASK_PARAMS:
        raise InvalidInput(f"task {task!r} is not supported; supported tasks: {list(TASKS)}")
    return dict(TASK_PARAMS[task]) if task in OWN_LENGTH else {**COMMON, **TASK_PARAMS[task]}


def resolve_for(config: Any, params: dict[str, Any] | None) -> dict[str, Any]:
    """`resolve` with everything a bundle's `ServingConfig` says: its defaults, and for the
    generation tasks the model's generation defaults and the max_new_tokens limit."""
    if config.task not in GENERATION_TASKS:
        return resolve(config.task, params, config.defaults, config.max_length)
    generation = config.generation or {}
    model_defaults = dict(generation.get("defaults") or {})
    if config.task == "text-generation":
        model_defaults["return_full_text"] = config.prompt_template is None
        if generation.get("return_full_text") is not None:  # the source model's MLflow model_config
            model_defaults["return_full_text"] = generation["return_full_text"]
    model_defaults = {k: v for k, v in model_defaults.items() if v is not None}
    resolved = resolve(config.task, params, {**model_defaults, **config.defaults}, config.max_length)
    limit = int(generation.get("max_new_tokens_limit") or 256)
    if resolved["max_new_tokens"] is None:
        resolved["max_new_tokens"] = min(32, limit)
    elif "max_new_tokens" not in (params or {}):  # a default (the model's, the bundle's): capped
        resolved["max_new_tokens"] = min(resolved["max_new_tokens"], limit)
    elif resolved["max_new_tokens"] > limit:
        raise InvalidInput(
            f"param 'max_new_tokens': {resolved['max_new_tokens']} exceeds this model's limit of {limit}"
        )
    for name, fallback in GENERATION_DEFAULTS.items():
        if resolved[name] is None and fallback is not None:
            resolved[name] = fallback
    if resolved.get("return_full_text") is None and config.task == "text-generation":
        resolved["return_full_text"] = True
    asked = params or {}
    if resolved["num_beams"] > 1 and resolved["do_sample"]:
        # Beam sampling is not implemented: the param the request set wins over the default.
        if "do_sample" in asked and "num_beams" not in asked:
            resolved["num_beams"] = 1
        elif "num_beams" in asked and "do_sample" not in asked:
            resolved["do_sample"] = False
    if resolved["num_beams"] > 1 and resolved["do_sample"]:
        raise InvalidInput(
            "params 'num_beams' > 1 with 'do_sample' true (the request's or the model's default): beam sampling "
            "is not supported; pass do_sample=false for beam search"
        )
    return resolved


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
    if "max_length" in resolved:
        if resolved["max_length"] is None:
            resolved["max_length"] = max_length
        elif resolved["max_length"] > max_length:
            raise InvalidInput(
                f"param 'max_length': {resolved['max_length']} exceeds the model's maximum of {max_length}"
            )
    if task == "question-answering":
        _resolve_windows(resolved, max_length)
    return resolved


def _resolve_windows(resolved: dict[str, Any], max_length: int) -> None:
    """question-answering's window defaults, as the pipeline picks them."""
    if resolved["max_seq_len"] is None:
        resolved["max_seq_len"] = min(max_length, 384)
    elif resolved["max_seq_len"] > max_length:
        raise InvalidInput(
            f"param 'max_seq_len': {resolved['max_seq_len']} exceeds the model's maximum of {max_length}"
        )
    if resolved["doc_stride"] is None:
        resolved["doc_stride"] = min(resolved["max_seq_len"] // 2, 128)
    elif resolved["doc_stride"] > resolved["max_seq_len"]:
        raise InvalidInput(
            f"param 'doc_stride': {resolved['doc_stride']} is larger than max_seq_len ({resolved['max_seq_len']})"
        )


def validate_defaults(task: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Check bundle defaults at export time; returns them unchanged."""
    resolve(task, defaults, {}, max_length=10**9)
    return defaults
