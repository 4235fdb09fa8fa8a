"""The generation contract: one typed set of decoding params from the request to the model tier.

- `PARAMS`: the request params of every generation task (validator, default, signature type),
  as the pipelines take them (`generate`'s names); their limits (`MAX_BEAMS`, a bundle's
  `max_new_tokens_limit`) are stated once, here.
- `GenerationInfo`: the bundle's `generation` section (serving.json), written by export: the
  decoder graph's names and shapes, eos/pad ids, the model's own decoding settings, the defaults
  of the request params and the max_new_tokens limit.
- `GenerationParams`: what the decoding loop runs with: a resolved request's params plus the
  model's own settings. `to_oip` writes the request part as Open Inference Protocol request
  parameters; `from_oip` reads them back in the model tier, checking them again (a direct OIP
  client may send anything).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from splitserve.core import params as P
from splitserve.core.errors import InvalidInput, shown, shown_list

MAX_BEAMS = 16
DEFAULT_MAX_NEW_TOKENS_LIMIT = 256
DEFAULT_MAX_NEW_TOKENS = 32  # when neither the model nor the request says (capped by the limit)
OUTPUT = "generated_ids"  # the model tier's output: INT64 [rows, new tokens], -1 after a row's end
PAD = -1


def _early_stopping(name: str, value: Any) -> bool | str:
    """transformers' `early_stopping`: true, false or "never"."""
    if isinstance(value, bool) or value == "never":
        return value
    if value in ("true", "false"):  # as MLflow's string-typed signature param sends them
        return value == "true"
    raise InvalidInput(f'param {name!r}: expected true, false or "never", got {shown(value)}')


def _stop(name: str, value: Any) -> list[str]:
    """`stop`: a string or a list of non-empty strings."""
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else P.string_list(name, value)
    if any(not s for s in stops):
        raise InvalidInput(f"param {name!r}: stop sequences must not be empty")
    return stops


# Defaults of None come from the model's generation_config (the bundle's `GenerationInfo.defaults`),
# then from `FALLBACKS`.
PARAMS: tuple[P.Param, ...] = (
    P.Param("max_new_tokens", P.optional_positive_int, None, "long"),
    P.Param("do_sample", P.optional_boolean, None, "boolean"),
    P.Param("temperature", P.positive_float, 1.0, "double"),
    P.Param("top_k", P.optional_non_negative_int, None, "long"),  # 0 or null: no top-k filter
    P.Param("top_p", P.probability, 1.0, "double"),
    P.Param("repetition_penalty", P.positive_float, 1.0, "double"),
    P.Param("seed", P.optional_non_negative_int, None, "long"),  # null: a fresh seed per request
    P.Param("stop", _stop, [], "string_list"),
    P.Param("num_beams", P.at_most(MAX_BEAMS, P.optional_positive_int, "beams"), None, "long"),
    P.Param("length_penalty", P.number, None, "double"),
    P.Param("early_stopping", _early_stopping, None, "string"),
    P.Param("no_repeat_ngram_size", P.optional_non_negative_int, None, "long"),
    P.Param("min_new_tokens", P.optional_non_negative_int, None, "long"),
)
# The value each param takes when neither the request, the bundle nor the model sets it.
FALLBACKS: dict[str, Any] = {
    "do_sample": False,
    "temperature": 1.0,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "num_beams": 1,
    "length_penalty": 1.0,
    "early_stopping": False,
    "no_repeat_ngram_size": 0,
    "min_new_tokens": 0,
}
MODEL_DEFAULTS = ("max_new_tokens", "top_k", *FALLBACKS)  # the params a model's generation_config sets


@dataclass
class ModelDecoding:
    """The model's own decoding settings (its generation_config), not request params."""

    min_length: int = 0  # of the whole sequence the decoder sees (prompt included, decoder-only)
    forced_bos_token_id: int | None = None
    forced_eos_token_id: list[int] = field(default_factory=list)
    # Whisper: never generated, and not as the first new token.
    suppress_tokens: list[int] = field(default_factory=list)
    begin_suppress_tokens: list[int] = field(default_factory=list)
    # Whisper's timestamps (transformers' WhisperTimeStampLogitsProcessor): the <|notimestamps|> id
    # (timestamp tokens follow it) and the latest first timestamp; the ids a request's decoder prompt
    # may hold (start, language, task, no-timestamps tokens).
    no_timestamps_token_id: int | None = None
    max_initial_timestamp_index: int | None = None
    prompt_token_ids: list[int] = field(default_factory=list)


@dataclass
class GenerationInfo:
    """serving.json's `generation` section (export writes it; every tier reads it)."""

    architecture: str  # "decoder" (decoder-only LM) or "encoder-decoder"
    pipeline_task: str
    graph_inputs: list[str]
    graph_outputs: list[str]
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    eos_token_ids: list[int]
    pad_token_id: int | None
    model_settings: ModelDecoding
    defaults: dict[str, Any]  # request params' defaults, from the model's generation_config and MLflow model_config
    max_new_tokens_limit: int = DEFAULT_MAX_NEW_TOKENS_LIMIT
    collapse_whitespace: bool = False  # MLflow's text-generation option
    encoder_file: str | None = None  # encoder-decoders: the encoder graph
    decoder_start_token_id: int | None = None
    prefix: str | None = None  # the pipeline's task prefix (T5's "translate English to French: ")
    # Speech encoder-decoders (Whisper): the decoder's prompt (start, language, task, no-timestamps
    # tokens), in place of [decoder_start_token_id]; the encoder takes `input_features`.
    decoder_prompt_ids: list[int] = field(default_factory=list)
    # Multilingual Whisper: its language tokens ("<|fr|>") and tasks ("transcribe") with their ids.
    languages: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)

    @property
    def encoder_decoder(self) -> bool:
        return self.architecture == "encoder-decoder"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationInfo:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["model_settings"] = ModelDecoding(**dict(values.get("model_settings") or {}))
        return cls(**values)


@dataclass(frozen=True)
class GenerationParams:
    """A request's decoding params, resolved, with the model's own settings."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None  # None: fresh entropy per request
    stop_ids: tuple[tuple[int, ...], ...] = ()
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False or "never"
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0
    # Speech encoder-decoders (Whisper): this request's decoder prompt (empty: the bundle's), and
    # timestamp tokens (their processor on; the prompt then has no <|notimestamps|>).
    decoder_prompt: tuple[int, ...] = ()
    timestamps: bool = False
    # The model's own settings (GenerationInfo), never sent on the wire.
    eos_ids: tuple[int, ...] = ()
    min_length: int = 0
    forced_bos_token_id: int | None = None
    forced_eos_token_id: tuple[int, ...] = ()
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    no_timestamps_token_id: int | None = None
    max_initial_timestamp_index: int | None = None
    prompt_token_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, resolved: Mapping[str, Any], stop_ids: list[list[int]], info: GenerationInfo) -> GenerationParams:
        """From a request's resolved params (see `resolve`) and its stop strings' token ids."""
        request = {
            name: resolved[name]
            for name in WIRE
            if name in resolved and name not in ("stop_ids", "decoder_prompt") and resolved[name] is not None
        }
        if resolved.get("decoder_prompt"):
            request["decoder_prompt"] = tuple(int(t) for t in resolved["decoder_prompt"])
        request["top_k"] = request.get("top_k") or 0
        return cls(**request, stop_ids=tuple(tuple(s) for s in stop_ids if s), **_model_settings(info))

    def to_oip(self) -> dict[str, bool | int | float | str]:
        """The request part as OIP request parameters (bool, int64, double, string)."""
        out: dict[str, bool | int | float | str] = {}
        for name, kind in WIRE.items():
            value = getattr(self, name)
            if (name == "seed" and value is None) or (name == "timestamps" and not value):
                continue
            if name == "stop_ids":
                if value:
                    out[name] = json.dumps([list(s) for s in value])
                continue
            if name == "decoder_prompt":
                if value:
                    out[name] = json.dumps(list(value))
                continue
            out[name] = str(value).lower() if name == "early_stopping" else kind(value)
        return out

    @classmethod
    def from_oip(cls, values: Mapping[str, Any], info: GenerationInfo) -> GenerationParams:
        """Read and check OIP request parameters; what is absent takes its plain default."""
        unknown = sorted(set(values) - set(WIRE))
        if unknown:
            raise InvalidInput(f"unknown parameter(s) {shown_list(unknown)}; generation takes {sorted(WIRE)}")
        request: dict[str, Any] = {}
        for name, value in values.items():
            kind = WIRE[name]
            expected = (float, int) if kind is float else (kind,)
            if isinstance(value, bool) != (kind is bool) or not isinstance(value, expected):
                raise InvalidInput(f"parameter {name!r}: expected {kind.__name__}, got {shown(value)}")
            request[name] = value
        if "early_stopping" in request:
            early = request["early_stopping"].lower()
            if early not in ("true", "false", "never"):
                raise InvalidInput(f"parameter 'early_stopping': expected true, false or never, got {shown(early)}")
            request["early_stopping"] = {"true": True, "false": False}.get(early, early)
        if "stop_ids" in request:
            request["stop_ids"] = _stop_ids(request["stop_ids"])
        if "decoder_prompt" in request:
            request["decoder_prompt"] = _decoder_prompt(request["decoder_prompt"], info)
        for name in ("temperature", "top_p", "repetition_penalty", "length_penalty"):
            if name in request:
                request[name] = float(request[name])
        request.setdefault("max_new_tokens", min(DEFAULT_MAX_NEW_TOKENS, info.max_new_tokens_limit))
        p = cls(**request, **_model_settings(info))
        p.check(info.max_new_tokens_limit)
        return p

    def check(self, limit: int) -> None:
        """The limits every tier enforces (the preprocess tier's validators say the same, by name)."""
        for name in ("temperature", "top_p", "repetition_penalty", "length_penalty"):
            if not math.isfinite(getattr(self, name)):  # NaN passes every comparison below
                raise InvalidInput(f"parameter {name!r}: expected a finite number, got {getattr(self, name)}")
        if not 1 <= self.max_new_tokens <= limit:
            raise InvalidInput(f"parameter 'max_new_tokens': {self.max_new_tokens} is not in [1, {limit}]")
        if self.temperature <= 0 or self.repetition_penalty <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise InvalidInput(
                "parameters: temperature and repetition_penalty must be > 0, top_p in (0, 1], top_k >= 0"
            )
        if self.seed is not None and self.seed < 0:
            raise InvalidInput(f"parameter 'seed': expected a non-negative integer, got {self.seed}")
        if not 1 <= self.num_beams <= MAX_BEAMS:
            raise InvalidInput(f"parameter 'num_beams': {self.num_beams} is not in [1, {MAX_BEAMS}]")
        if self.num_beams > 1 and self.do_sample:
            raise InvalidInput("parameters: num_beams > 1 with do_sample=true (beam sampling) is not supported")
        if self.no_repeat_ngram_size < 0 or self.min_new_tokens < 0:
            raise InvalidInput("parameters: no_repeat_ngram_size and min_new_tokens must be >= 0")
        if self.timestamps and self.no_timestamps_token_id is None:
            raise InvalidInput("parameter 'timestamps': this model has no timestamp tokens")


# The request fields of GenerationParams on the wire, with their Python type (early_stopping is
# "true" | "false" | "never"; stop_ids a JSON list of token-id lists).
WIRE: dict[str, type] = {
    "max_new_tokens": int,
    "do_sample": bool,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "repetition_penalty": float,
    "seed": int,
    "stop_ids": str,
    "num_beams": int,
    "length_penalty": float,
    "early_stopping": str,
    "no_repeat_ngram_size": int,
    "min_new_tokens": int,
    "decoder_prompt": str,
    "timestamps": bool,
}


def _model_settings(info: GenerationInfo) -> dict[str, Any]:
    m = info.model_settings
    return {
        "eos_ids": tuple(int(t) for t in info.eos_token_ids),
        "min_length": int(m.min_length or 0),
        "forced_bos_token_id": m.forced_bos_token_id,
        "forced_eos_token_id": tuple(int(t) for t in m.forced_eos_token_id),
        "suppress_tokens": tuple(int(t) for t in m.suppress_tokens),
        "begin_suppress_tokens": tuple(int(t) for t in m.begin_suppress_tokens),
        "no_timestamps_token_id": m.no_timestamps_token_id,
        "max_initial_timestamp_index": m.max_initial_timestamp_index,
        "prompt_token_ids": tuple(int(t) for t in m.prompt_token_ids),
    }


def _decoder_prompt(raw: str, info: GenerationInfo) -> tuple[int, ...]:
    """A request's decoder prompt: a JSON list of the model's prompt tokens, starting with its start."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    allowed = set(info.model_settings.prompt_token_ids)
    if (
        not isinstance(value, list)
        or not value
        or len(value) > len(info.decoder_prompt_ids)
        or not all(isinstance(t, int) and not isinstance(t, bool) and t in allowed for t in value)
        or value[0] != next(iter(info.decoder_prompt_ids), None)
    ):
        raise InvalidInput(
            f"parameter 'decoder_prompt': expected a JSON list of this model's start, language and task tokens, "
            f"got {shown(raw)}"
        )
    return tuple(value)


def _stop_ids(raw: str) -> tuple[tuple[int, ...], ...]:
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(
        isinstance(s, list) and s and all(isinstance(t, int) and not isinstance(t, bool) for t in s) for s in value
    ):
        raise InvalidInput("parameter 'stop_ids': expected a JSON list of non-empty lists of token ids")
    return tuple(tuple(s) for s in value)


def resolve(
    info: GenerationInfo,
    spec: tuple[P.Param, ...],
    params: dict[str, Any] | None,
    bundle_defaults: dict[str, Any],
    task: str,
    prompt_template: str | None,
) -> dict[str, Any]:
    """A generation request's params: request > bundle defaults (export --set) > the model's
    (generation_config, MLflow model_config) > `FALLBACKS`; max_new_tokens within the bundle's limit
    (a default is capped to it, a request over it refused); beam sampling refused."""
    model_defaults = dict(info.defaults)
    if any(p.name == "return_full_text" for p in spec):  # a model_config or --set default wins
        model_defaults["return_full_text"] = prompt_template is None
    model_defaults = {k: v for k, v in model_defaults.items() if v is not None}
    resolved = P.resolve(spec, params, {**model_defaults, **bundle_defaults}, task)
    limit = info.max_new_tokens_limit
    asked = params or {}
    if resolved["max_new_tokens"] is None:
        resolved["max_new_tokens"] = min(DEFAULT_MAX_NEW_TOKENS, limit)
    elif "max_new_tokens" not in asked:  # a default (the model's, the bundle's): capped
        resolved["max_new_tokens"] = min(resolved["max_new_tokens"], limit)
    elif resolved["max_new_tokens"] > limit:
        raise InvalidInput(
            f"param 'max_new_tokens': {resolved['max_new_tokens']} exceeds this model's limit of {limit}"
        )
    for name, fallback in FALLBACKS.items():
        if resolved[name] is None:
            resolved[name] = fallback
    if resolved.get("return_full_text", False) is None:
        resolved["return_full_text"] = True
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
