"""protobuf <-> plain Python/numpy for splitserve's own API: records, params, tensors, model
parameters. Results are typed per task: each task module maps its result kind
(`splitserve.tasks.result_to_pb` / `result_from_pb`); the model tier's OIP conversion lives in
`model_svc/codec.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import struct_pb2

from protos import splitserve_pb2 as pb
from splitserve.core.records import Record
from splitserve.core.tensors import from_raw, to_raw


def records_to_pb(records: list[Record]) -> list[pb.Record]:
    out = []
    for r in records:
        msg = pb.Record(id=r.id, candidate_labels=r.candidate_labels)
        for name in ("text", "text_pair", "question", "context"):
            value = getattr(r, name)
            if value is not None:
                setattr(msg, name, value)
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
                candidate_labels=list(m.candidate_labels),
            )
        )
    return records


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
