"""What a task is: the one class every task module fills in.

A task declares, in one place: its names (with MLflow's aliases), its params (`Param` rows), the
record fields it reads, `encode` (records -> model inputs + context for the postprocess assets),
`decode` (model outputs + context -> one result per record), its result kind with the protobuf
mapping of that kind, and its export facts (`ExportFacts`). The stages and tiers look a task up
in the registry (`splitserve.tasks`) and call it; nothing else names a task.

No protobuf in `encode`/`decode` (the in-process pipeline runs them too); `to_pb`/`from_pb` are
the task's edge to the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from splitserve.core import params as P
from splitserve.core.bundle import ServingConfig
from splitserve.core.encoder import TransformersEncoder
from splitserve.core.errors import InvalidInput, record_label
from splitserve.core.records import Limits, Record, check_records

# The context tensor that maps model rows to records, for tasks that make several rows of one
# record (question-answering windows, zero-shot hypotheses): int64 [rows], non-decreasing.
ROW_RECORD = "row_record"

# The params of every task that tokenizes one text (or pair) per model row.
TRUNCATION: tuple[P.Param, ...] = (
    P.Param("truncation", P.boolean, True, "boolean"),
    P.Param("max_length", P.optional_positive_int, None, "long"),  # None: the model's maximum
)


@dataclass
class Encoded:
    model_inputs: dict[str, np.ndarray]  # what the model tier runs on
    context: dict[str, np.ndarray]  # what the postprocess stage needs besides model outputs
    # Scalars for the model tier (OIP request parameters): the generation params.
    model_params: dict[str, bool | int | float | str] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)  # the ids of the records truncation cut


@dataclass(frozen=True)
class Assets:
    """What a task's `encode` and `decode` see of the bundle: its serving config, its tokenizer
    (and feature extractor), and the tier's limits. (Not a stage: the stages are preprocess, model
    and postprocess, whose drivers live in `splitserve.stages`.)"""

    config: ServingConfig
    tokenizer: Any
    limits: Limits = Limits()
    features: Any = None  # audio tasks: the bundle's feature extractor (numpy)
    # How texts become token arrays (`splitserve.core.encoder.text_encoder`, chosen when the
    # preprocess stage loads); None: the tokenizer's own call.
    encoder: Any = None

    def encode(self, texts: list[str], pairs: list[str] | None = None, **options: Any) -> Any:
        """The texts (and pairs) as the tokenizer's `__call__` answers them, padded to the longest
        row, as arrays (`TransformersEncoder.__call__` names the options)."""
        encoder = self.encoder if self.encoder is not None else TransformersEncoder(self.tokenizer)
        return encoder(texts, pairs, **options)

    def model_inputs(self, enc: Any) -> dict[str, np.ndarray]:
        """The graph's inputs from a tokenizer's output (token_type_ids zero where it has none)."""
        model_inputs = {}
        for name in self.config.model_inputs:
            if name in enc:
                model_inputs[name] = np.asarray(enc[name], dtype=np.int64)
            elif name == "token_type_ids":
                model_inputs[name] = np.zeros_like(enc["input_ids"], dtype=np.int64)
            else:
                raise RuntimeError(f"the tokenizer does not produce model input {name!r}")
        return model_inputs

    def prompted(self, text: str) -> str:
        """The text in the source model's MLflow prompt_template ("... {prompt} ..."), where it has one."""
        template = self.config.prompt_template
        return template.format(prompt=text) if template else text

    def check_lengths(
        self, enc: Any, records: list[Record], rows: list[int] | None = None, field: str = "text"
    ) -> None:
        """Refuse untruncated rows longer than the model takes (`rows`: the record of each row)."""
        lengths = enc["attention_mask"].sum(axis=1)
        for row, n in enumerate(lengths):
            if n > self.config.max_length:
                i = row if rows is None else rows[row]
                raise InvalidInput(
                    f"{record_label(i, records[i].id)}: field {field!r} is {int(n)} tokens long; the model "
                    f"takes at most {self.config.max_length} (set param truncation=true)"
                )


@dataclass
class Batch:
    """One request's records, model outputs and context, checked: every tensor has one row per
    model row in dim 0 (one per record, or as `row_record` maps them)."""

    records: list[Record]
    outputs: dict[str, np.ndarray]
    context: dict[str, np.ndarray]
    rows: int

    def output(self, name: str) -> np.ndarray:
        if name not in self.outputs:
            raise InvalidInput(f"model output {name!r} is missing; got {sorted(self.outputs)}")
        return _check_rows(name, self.outputs[name], self.rows)

    def ctx(self, name: str) -> np.ndarray:
        if name not in self.context:
            raise InvalidInput(f"context tensor {name!r} is missing; got {sorted(self.context)}")
        return _check_rows(name, self.context[name], self.rows)

    def record_rows(self) -> list[np.ndarray]:
        """The model rows of each record, from `row_record` (non-decreasing, every record has one)."""
        mapping = self.ctx(ROW_RECORD)
        n = len(self.records)
        if mapping.ndim == 1 and np.array_equal(mapping, np.arange(n)):  # one row per record: most requests
            return list(np.arange(n).reshape(n, 1))
        if mapping.ndim != 1 or np.any(np.diff(mapping) < 0) or not np.array_equal(np.unique(mapping), np.arange(n)):
            raise InvalidInput(f"context tensor {ROW_RECORD!r} does not map rows onto the {n} records in order")
        return [np.nonzero(mapping == i)[0] for i in range(n)]


def truncated_ids(enc: Any, records: list[Record], rows: list[int] | None = None) -> list[str]:
    """The ids of the records a tokenizer call cut (`rows`: the record of each row)."""
    cut = {row if rows is None else rows[row] for row, e in enumerate(enc.encodings) if e.overflowing}
    return [records[i].id for i in sorted(cut)]


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def encode_texts(
    assets: Assets, records: list[Record], p: dict[str, Any], pairs: bool = False, offsets: bool = False
) -> Encoded:
    """One row per record: its text (and `text_pair`, with `pairs`), padded to the request's longest
    and truncated as the params say; the context has the attention mask, and with `offsets` the
    ids, character offsets and special-tokens mask of every token."""
    enc = assets.encode(  # dynamic padding: to the longest record of this request
        [assets.prompted(r.text or "") for r in records],
        [r.text_pair or "" for r in records] if pairs else None,
        truncation=p["truncation"],
        max_length=p["max_length"],
        offsets=offsets,
    )
    if not p["truncation"]:
        assets.check_lengths(enc, records)
    context = {"attention_mask": enc["attention_mask"].astype(np.int64)}
    if offsets:
        context["input_ids"] = enc["input_ids"].astype(np.int64)
        context["offset_mapping"] = enc["offset_mapping"].astype(np.int64)
        context["special_tokens_mask"] = enc["special_tokens_mask"].astype(np.int64)
    return Encoded(model_inputs=assets.model_inputs(enc), context=context, truncated=truncated_ids(enc, records))


def _check_rows(name: str, array: np.ndarray, n: int) -> np.ndarray:
    if array.ndim == 0 or array.shape[0] != n:
        raise InvalidInput(f"tensor {name!r} has shape {list(array.shape)}; expected {n} rows in dim 0")
    return array


ParityFamily = Literal["encoder", "decoder", "seq2seq", "audio", "audio-seq2seq", "table"]


@dataclass(frozen=True)
class ExportFacts:
    """How `splitserve export` treats a task."""

    outputs: tuple[str, ...]  # the graph outputs the stages read; the first is the main one
    # The graph family (`splitserve.export.onnx`) and the check against PyTorch, one of five:
    # "encoder" (the outputs), "decoder" or "seq2seq" (logits, then greedy tokens), "audio" (an
    # audio encoder), "audio-seq2seq" (Whisper; a CTC model is an audio encoder), "table" (TAPAS:
    # `splitserve.export.table`)
    parity: ParityFamily = "encoder"
    int8_gate: tuple[str, ...] = ()  # quality metrics an int8 export must keep; none: int8 is refused
    labels: bool = False  # the stages read the model config's id2label
    # The graph files the bundle keeps; the last is the one the model tier runs (encoder-decoders:
    # the encoder, then the decoder).
    graphs: tuple[str, ...] = ("model.onnx",)


class Task:
    """One pipeline task. Subclasses set the class attributes and implement encode/decode/to_pb/from_pb."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()  # other names MLflow or transformers give the task
    params: ClassVar[tuple[P.Param, ...]] = ()
    required: ClassVar[tuple[str, ...]] = ("text",)  # record fields every record must have
    fields: ClassVar[tuple[str, ...]] = ("text",)  # record fields the task reads
    result_kind: ClassVar[str]  # the key of its results, and the `Result.output` oneof field
    example: ClassVar[Any]  # one result value, as the client returns it (docs, the codec's round-trip test)
    export: ClassVar[ExportFacts]
    streams: ClassVar[bool] = False  # PredictStream sends text as it is generated
    decodes_tokens: ClassVar[bool] = False  # the postprocess stage needs the tokenizer
    multi_row: ClassVar[bool] = False  # several model rows per record (`row_record` in the context)
    # Params a partial decode of a stream runs with (the deltas' text), over the request's.
    stream_params: ClassVar[dict[str, Any]] = {}
    # Text fields MLflow's transformers pyfunc answers stripped of surrounding whitespace
    # (`_sanitize_output`): the bundle's pyfunc does the same (`as_mlflow_serves`); the gateway
    # answers the pipeline's exact text, which its token ids and streamed deltas add up to.
    mlflow_strips: ClassVar[tuple[str, ...]] = ()
    # How rerank and score (`gateway_svc.rerank`) score a pair of texts with this task: "cross-encoder"
    # (one record of text + text_pair, its one label's score) or "cosine" (of each text's pooled
    # embedding); None: they refuse the bundle.
    pair_scoring: ClassVar[Literal["cross-encoder", "cosine"] | None] = None

    def accepts(self, name: str) -> bool:
        return name == self.name or name in self.aliases

    def validate_defaults(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """Check a bundle's default params at export time; returns them unchanged."""
        P.resolve(self.params, defaults, {}, self.name)
        return defaults

    def resolve(self, config: ServingConfig, params: dict[str, Any] | None) -> dict[str, Any]:
        """A request's complete, validated params: request > bundle defaults > the task's."""
        resolved = P.resolve(self.params, params, config.defaults, self.name)
        if "max_length" in resolved:
            if resolved["max_length"] is None:
                resolved["max_length"] = config.max_length
            P.check_within(resolved, "max_length", config.max_length)
        return resolved

    def signature_defaults(self, config: ServingConfig) -> dict[str, Any]:
        """The param defaults the bundle's MLflow signature shows (MLflow passes them to the pyfunc)."""
        return config.defaults

    def deterministic(self, p: dict[str, Any]) -> bool:
        """The answer is a function of the records and these resolved params alone (the gateway's
        response cache may keep it); a task whose params can make it random says when."""
        return True

    def check(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> None:
        """The request's records, before encoding (messages name the record and the field)."""
        check_records(records, assets.limits, self.required, self.fields)

    def encode(self, assets: Assets, records: list[Record], p: dict[str, Any]) -> Encoded:
        raise NotImplementedError

    def decode(self, assets: Assets, batch: Batch, p: dict[str, Any]) -> list[dict[str, Any]]:
        """One result per record: {result_kind: value}."""
        raise NotImplementedError

    def to_pb(self, value: Any) -> Any:
        """A result's value as its `Result.output` message."""
        raise NotImplementedError

    def from_pb(self, message: Any) -> Any:
        """A `Result.output` message as the value the client returns."""
        raise NotImplementedError

    def plain(self, value: Any) -> Any:
        """A result's value as plain Python (what the in-process pipeline returns)."""
        return value

    def as_mlflow_serves(self, value: Any, config: ServingConfig | None = None) -> Any:
        """A plain result's value as MLflow's pyfunc answers it: the `mlflow_strips` fields of the
        value (a dict, or a list of them) stripped (`config`: the bundle's, where the model decides)."""
        if not self.mlflow_strips:
            return value
        if isinstance(value, list):
            return [self.as_mlflow_serves(v) for v in value]
        if isinstance(value, dict):
            return {k: v.strip() if k in self.mlflow_strips and isinstance(v, str) else v for k, v in value.items()}
        return value
