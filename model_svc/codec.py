"""Open Inference Protocol messages <-> numpy arrays, for the model tier."""

from __future__ import annotations

from typing import Any

import numpy as np

from protos import grpc_predict_v2_pb2 as oip
from splitserve.core.errors import InvalidInput, shown, shown_list
from splitserve.core.tensors import check_shape, from_raw, numpy_dtype, to_raw

# Typed-contents field for each datatype, for clients that do not send raw bytes.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def inputs_from_request(request: oip.ModelInferRequest) -> dict[str, np.ndarray]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise InvalidInput(f"input {shown(tensor.name)} is given twice")
        if raw:
            arrays[tensor.name] = from_raw(tensor.name, tensor.datatype, list(tensor.shape), raw[i])
            continue
        field = _CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise InvalidInput(
                f"input {shown(tensor.name)}: datatype {shown(tensor.datatype)} must be sent as raw bytes"
            )
        shape, count = check_shape(tensor.name, list(tensor.shape))
        contents = getattr(tensor.contents, field)
        if len(contents) != count:
            raise InvalidInput(f"input {shown(tensor.name)}: {len(contents)} values do not fit shape {list(shape)}")
        try:
            values = np.asarray(contents, dtype=numpy_dtype(tensor.datatype))
        except OverflowError:
            raise InvalidInput(f"input {shown(tensor.name)}: a value is out of range for {tensor.datatype}") from None
        arrays[tensor.name] = values.reshape(shape)
    return arrays


def parameters_from_request(request: oip.ModelInferRequest) -> dict[str, Any]:
    """The request's `parameters` as plain Python values (bool, int, str, float)."""
    values: dict[str, Any] = {}
    for name, param in request.parameters.items():
        kind = param.WhichOneof("parameter_choice")
        if kind is None:
            raise InvalidInput(f"parameter {shown(name)} has no value")
        values[name] = getattr(param, kind)
    return values


def response_from_outputs(
    outputs: dict[str, np.ndarray], request: oip.ModelInferRequest, model_name: str, version: str
) -> oip.ModelInferResponse:
    wanted = [o.name for o in request.outputs] or list(outputs)
    unknown = sorted(set(wanted) - set(outputs))
    if unknown:
        raise InvalidInput(f"requested output(s) {shown_list(unknown)} do not exist; outputs: {sorted(outputs)}")
    response = oip.ModelInferResponse(model_name=model_name, model_version=version, id=request.id)
    for name in wanted:
        datatype, shape, raw = to_raw(outputs[name])
        response.outputs.add(name=name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(raw)
    return response


def tensor_metadata(name: str, datatype: str, shape: list[int]) -> Any:
    return oip.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=shape)
