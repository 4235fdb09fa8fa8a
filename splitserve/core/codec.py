"""protobuf <-> plain Python/numpy for splitserve's own API: records, params, tensors, model
parameters. Results are typed per task: each task module maps its result kind
(`splitserve.tasks.result_to_pb` / `result_from_pb`); the model tier's OIP conversion lives in
`model_svc/codec.py`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from google.protobuf import struct_pb2

from protos import splitserve_pb2 as pb
from splitserve.core.errors import InvalidInput, record_label
from splitserve.core.records import STRING_FIELDS, TEXT_ALIASES, Record, to_records
from splitserve.core.tensors import from_raw, to_raw


def predict_request(
    records: Any, params: dict[str, Any] | None, model: str = "", local_files: bool = False
) -> pb.PredictRequest:
    """A gateway request from what a client passes (strings, dicts, a DataFrame): every field of
    every record travels (a templated bundle reads the extra ones; others refuse them).
    `local_files`: an audio record's path is read here (the Python client, on its own machine;
    never a server's door)."""
    if params is not None and not isinstance(params, dict):
        raise InvalidInput(f"params must be an object (a dict), got {type(params).__name__}")
    return pb.PredictRequest(
        model=model,
        records=records_to_pb(to_records(records, extra=True, local_files=local_files)),
        params=params_to_struct(params),
    )


def records_to_pb(records: list[Record]) -> list[pb.Record]:
    out = []
    for r in records:
        msg = pb.Record(id=r.id, candidate_labels=r.candidate_labels)
        msg.messages.extend(pb.ChatMessage(role=m["role"], content=m["content"]) for m in r.messages)
        for name in STRING_FIELDS:
            value = getattr(r, name)
            if value is not None:
                setattr(msg, name, value)
        if r.extra:
            msg.extra = json.dumps(r.extra, ensure_ascii=False, allow_nan=False)
        if r.text_field != "text":
            msg.text_field = r.text_field
        if r.token_ids is not None:
            msg.token_ids.extend(r.token_ids)
        _audio_to_pb(r, msg)
        out.append(msg)
    return out


def records_from_pb(messages: Any) -> list[Record]:
    records = []
    for i, m in enumerate(messages):
        records.append(
            Record(
                id=m.id or str(i),
                text=m.text if m.HasField("text") else None,
                text_pair=m.text_pair if m.HasField("text_pair") else None,
                question=m.question if m.HasField("question") else None,
                context=m.context if m.HasField("context") else None,
                query=m.query if m.HasField("query") else None,
                table=m.table if m.HasField("table") else None,
                candidate_labels=list(m.candidate_labels),
                messages=[{"role": c.role, "content": c.content} for c in m.messages],
                extra=_extra(i, m) if m.extra else {},
                text_field=m.text_field if m.text_field in TEXT_ALIASES else "text",
                token_ids=list(m.token_ids) if m.token_ids else None,
                **_audio_from_pb(m),
            )
        )
    return records


def _audio_to_pb(record: Record, message: pb.Record) -> None:
    if isinstance(record.audio, bytes):
        message.audio_file = record.audio
    elif record.audio is not None:
        message.audio_samples.values.extend(np.asarray(record.audio, dtype=np.float32).tolist())
    if record.sampling_rate is not None:
        message.sampling_rate = record.sampling_rate


def _audio_from_pb(message: Any) -> dict[str, Any]:
    kind = message.WhichOneof("audio")
    audio: bytes | np.ndarray | None = None
    if kind == "audio_file":
        audio = message.audio_file
    elif kind == "audio_samples":
        audio = np.asarray(message.audio_samples.values, dtype=np.float32)
    rate = message.sampling_rate if message.HasField("sampling_rate") else None
    return {"audio": audio, "sampling_rate": rate}


def _extra(index: int, message: Any) -> dict[str, Any]:
    try:
        extra = json.loads(message.extra)
    except ValueError as exc:
        raise InvalidInput(f"{record_label(index, message.id)}: field 'extra' is not JSON ({exc})") from None
    if not isinstance(extra, dict):
        raise InvalidInput(f"{record_label(index, message.id)}: field 'extra' must be a JSON object")
    return extra


def rows_to_pb(rows: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(row, ensure_ascii=False, allow_nan=False) for row in rows]


def rows_from_pb(rows: Any) -> list[dict[str, Any]]:
    return [json.loads(row) for row in rows]


def params_to_struct(params: dict[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if params:
        struct.update(params)
    return struct


def params_from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Params as plain Python (numbers as floats, as JSON has them). Not json_format: it raises on
    NaN and Infinity, which the params' validators refuse by name instead."""
    return {name: _plain(value) for name, value in struct.fields.items()}


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {name: _plain(v) for name, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return None if kind in (None, "null_value") else getattr(value, kind)


def arrays_to_tensors(arrays: dict[str, np.ndarray]) -> list[pb.Tensor]:
    tensors = []
    for name, array in arrays.items():
        datatype, shape, raw = to_raw(array)
        tensors.append(pb.Tensor(name=name, datatype=datatype, shape=shape, raw=raw))
    return tensors


def tensors_to_arrays(tensors: Any) -> dict[str, np.ndarray]:
    return {t.name: from_raw(t.name, t.datatype, list(t.shape), t.raw) for t in tensors}


def model_params_to_pb(params: dict[str, Any]) -> dict[str, pb.ModelParameter]:
    """Scalar params for the model tier (bool, int, float, str) as ModelParameter messages."""
    out = {}
    for name, value in params.items():
        if isinstance(value, bool):
            out[name] = pb.ModelParameter(bool_value=value)
        elif isinstance(value, int):
            out[name] = pb.ModelParameter(int64_value=value)
        elif isinstance(value, float):
            out[name] = pb.ModelParameter(double_value=value)
        elif isinstance(value, str):
            out[name] = pb.ModelParameter(string_value=value)
        else:
            raise TypeError(f"model parameter {name!r}: unsupported type {type(value).__name__}")
    return out


def tokens_plain(response: pb.TokenizeResponse) -> list[list[dict[str, Any]]]:
    """A TokenizeResponse as TEI's /tokenize answers it: per input, [{"id", "text", "special", "start",
    "stop"}] (offsets in characters; None for a special token)."""
    return [
        [
            {
                "id": t.id,
                "text": t.text,
                "special": t.special,
                "start": t.start if t.HasField("start") else None,
                "stop": t.stop if t.HasField("stop") else None,
            }
            for t in one.tokens
        ]
        for one in response.inputs
    ]
