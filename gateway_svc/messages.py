"""The messages the gateway builds between hops: the model tier's OIP request from the preprocess
tier's answer, the model tier's outputs as tensors for the postprocess tier, the records without
their audio. Tensors are forwarded as bytes, never decoded here."""

from __future__ import annotations

from typing import Any

from protos import grpc_predict_v2_pb2 as oip
from protos import splitserve_pb2 as pb
from splitserve.core.errors import BundleMismatch

# splitserve.v1.ModelParameter's fields -> OIP InferParameter's.
_PARAM_FIELDS = {
    "bool_value": "bool_param",
    "int64_value": "int64_param",
    "double_value": "double_param",
    "string_value": "string_param",
}


def infer_request(pre: pb.PreprocessResponse) -> oip.ModelInferRequest:
    """The model tier's request: the preprocess tier's tensors, and its resolved model params."""
    request = oip.ModelInferRequest(model_name=pre.model, model_version=pre.fingerprint)
    for name, value in pre.model_parameters.items():  # e.g. generation params, as the pre tier resolved them
        kind = value.WhichOneof("value")
        if kind is not None:
            setattr(request.parameters[name], _PARAM_FIELDS[kind], getattr(value, kind))
    for tensor in pre.model_inputs:
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        request.raw_input_contents.append(tensor.raw)
    return request


def outputs(infer: oip.ModelInferResponse) -> list[pb.Tensor]:
    """The model tier's outputs, as the postprocess tier's input tensors."""
    return [
        pb.Tensor(name=out.name, datatype=out.datatype, shape=out.shape, raw=raw)
        for out, raw in zip(infer.outputs, infer.raw_output_contents, strict=True)
    ]


def postprocess_request(
    request: pb.PredictRequest, pre: pb.PreprocessResponse, tensors: list[pb.Tensor], partial: bool
) -> pb.PostprocessRequest:
    return pb.PostprocessRequest(
        model=pre.model,
        fingerprint=pre.fingerprint,
        records=without_audio(request.records),
        params=request.params,
        context=pre.context,
        model_outputs=tensors,
        partial=partial,
        task_records=pre.task_records,
    )


def answer(pre: pb.PreprocessResponse, post: pb.PostprocessResponse) -> pb.PredictResponse:
    return pb.PredictResponse(
        model=pre.model, fingerprint=pre.fingerprint, results=post.results, rows=post.rows, truncated=pre.truncated
    )


def check_model_version(infer: oip.ModelInferResponse, pre: pb.PreprocessResponse) -> None:
    if infer.model_version and infer.model_version != pre.fingerprint:
        raise BundleMismatch(
            f"bundle mismatch: preprocess serves {pre.fingerprint}, model serves {infer.model_version}"
        )


def check_post_version(post: pb.PostprocessResponse, pre: pb.PreprocessResponse) -> None:
    if post.fingerprint != pre.fingerprint:
        raise BundleMismatch(
            f"bundle mismatch: preprocess serves {pre.fingerprint}, postprocess serves {post.fingerprint}"
        )


def without_audio(records: Any) -> Any:
    """The records for the postprocess tier, which never reads audio: not sent a second time."""
    if not any(r.WhichOneof("audio") for r in records):
        return records
    out = []
    for record in records:
        copy = pb.Record()
        copy.CopyFrom(record)
        copy.ClearField("audio")
        out.append(copy)
    return out
