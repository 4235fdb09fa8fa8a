"""The model tier's Open Inference Protocol over REST (KServe v2 / Triton HTTP), beside its gRPC
port (`--rest-port`), so `tritonclient.http` works as `tritonclient.grpc` does:

    GET  /v2, /v2/health/live, /v2/health/ready
    GET  /v2/models/{name}[/versions/{version}]           metadata
    GET  /v2/models/{name}[/versions/{version}]/ready
    POST /v2/models/{name}[/versions/{version}]/infer     JSON tensors, or the binary-tensor extension
    POST /v2/repository/index                             the model-repository extension's index

Each request is turned into the OIP message and run by the tier's own methods (`infer`, the
transport-free one beside `ModelInfer`; the metadata and repository ones, which read no call
context), batching and errors included; tensors as JSON `data` (row-major, flat or nested) or, with
the binary extension, as raw little-endian bytes after the JSON header
(`Inference-Header-Content-Length`, each tensor's `binary_data_size`). Outputs come back binary
when the request asks (`binary_data` per output, or `binary_data_output`). Errors:
`{"error": message}` with the HTTP status of the one error table.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from protos import grpc_predict_v2_pb2 as oip
from splitserve.core.errors import InvalidInput
from splitserve.core.http_server import handled, json_response
from splitserve.core.tensors import from_raw, numpy_dtype

HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
# Request parameters this door reads itself; the rest go to the servicer (generation params).
_OWN_PARAMETERS = {"binary_data_output"}


def error_body(code: Any, message: str) -> dict[str, Any]:
    return {"error": message}


def _parameter(value: Any) -> oip.InferParameter:
    if isinstance(value, bool):
        return oip.InferParameter(bool_param=value)
    if isinstance(value, int):
        return oip.InferParameter(int64_param=value)
    if isinstance(value, float):
        return oip.InferParameter(double_param=value)
    if isinstance(value, str):
        return oip.InferParameter(string_param=value)
    raise InvalidInput(f"parameter value {value!r}: only booleans, numbers and strings")


def _plain(parameters: Any) -> dict[str, Any]:
    return {
        k: getattr(v, v.WhichOneof("parameter_choice"))
        for k, v in parameters.items()
        if v.WhichOneof("parameter_choice")
    }


def infer_request(body: bytes, header_length: int | None, name: str, version: str) -> tuple[oip.ModelInferRequest, Any]:
    """The gRPC request of a REST infer body, and which outputs are wanted binary (a function of
    the output's name: its own `binary_data`, else the request's `binary_data_output`)."""
    header, tail = (body[:header_length], body[header_length:]) if header_length is not None else (body, b"")
    try:
        request = json.loads(header)
    except ValueError as exc:
        raise InvalidInput(f"the request's JSON is not valid ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InvalidInput("the request must be a JSON object with a list of 'inputs'")
    parameters = request.get("parameters") or {}
    message = oip.ModelInferRequest(model_name=name, model_version=version, id=str(request.get("id", "")))
    for key, value in parameters.items():
        if key not in _OWN_PARAMETERS:
            message.parameters[key].CopyFrom(_parameter(value))
    offset = 0
    for tensor in request["inputs"]:
        try:
            tensor_name, datatype, shape = tensor["name"], tensor["datatype"], [int(d) for d in tensor["shape"]]
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("every input needs 'name', 'datatype' and 'shape'") from None
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = tail[offset : offset + int(size)]
            offset += int(size)
        elif "data" in tensor:
            try:
                raw = np.asarray(tensor["data"], dtype=numpy_dtype(datatype)).reshape(shape).tobytes()
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"input {tensor_name!r}: its data do not fit shape {shape} ({exc})") from None
        else:
            raise InvalidInput(f"input {tensor_name!r} has neither 'data' nor a 'binary_data_size'")
        from_raw(tensor_name, datatype, shape, raw)  # the size checked here, with the tensor's name
        message.inputs.add(name=tensor_name, datatype=datatype, shape=shape)
        message.raw_input_contents.append(raw)
    if offset != len(tail):
        raise InvalidInput(f"{len(tail) - offset} bytes after the binary inputs are left over")
    default = bool(parameters.get("binary_data_output", False))
    binary: dict[str, bool] = {}
    for out in request.get("outputs") or []:
        message.outputs.add(name=out["name"])
        binary[out["name"]] = bool((out.get("parameters") or {}).get("binary_data", default))
    return message, lambda output: binary.get(output, default)


def infer_response(response: oip.ModelInferResponse, binary: Any) -> Any:
    """The REST body of a gRPC response: JSON data, or the binary extension's layout."""
    from starlette.responses import Response

    outputs, tail = [], []
    for out, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if binary(out.name):
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = from_raw(out.name, out.datatype, list(out.shape), raw).ravel().tolist()
        outputs.append(entry)
    body = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "parameters": _plain(response.parameters),
        "outputs": outputs,
    }
    header = json.dumps(body, separators=(",", ":")).encode()
    if not tail:
        return Response(header, media_type="application/json")
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return Response(header + b"".join(tail), headers=headers, media_type="application/octet-stream")


def _tensors(metadata: Any) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata]


def build_app(tier: Any) -> Any:
    """The Starlette app of a `ModelTier` (its gRPC servicer does the work)."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    def model(request: Any) -> tuple[str, str]:
        return request.path_params["name"], request.path_params.get("version", "")

    async def server_metadata(request: Any) -> Any:
        return json_response(
            {"name": "splitserve", "version": (await tier.ServerMetadata(None, None)).version, "extensions": EXTENSIONS}
        )

    async def live(request: Any) -> Any:
        return json_response({"live": True})

    async def ready(request: Any) -> Any:
        return json_response({"ready": tier.loaded}, 200 if tier.loaded else 503)

    async def model_ready(request: Any) -> Any:
        name, version = model(request)
        ready = (await tier.ModelReady(oip.ModelReadyRequest(name=name, version=version), None)).ready
        return json_response({"name": name, "ready": ready}, 200 if ready else 503)

    async def metadata(request: Any) -> Any:
        name, version = model(request)
        meta = await tier.ModelMetadata(oip.ModelMetadataRequest(name=name, version=version), None)
        return json_response(
            {
                "name": meta.name,
                "versions": list(meta.versions),
                "platform": meta.platform,
                "inputs": _tensors(meta.inputs),
                "outputs": _tensors(meta.outputs),
            }
        )

    async def infer(request: Any) -> Any:
        name, version = model(request)
        length = request.headers.get(HEADER_LENGTH)
        if request.headers.get("content-encoding") not in (None, "identity"):
            raise InvalidInput("compressed requests are not supported; send them uncompressed")
        message, binary = infer_request(await request.body(), int(length) if length else None, name, version)
        return infer_response(await tier.infer(message, None), binary)

    async def index(request: Any) -> Any:
        response = await tier.RepositoryIndex(oip.RepositoryIndexRequest(), None)
        models = []
        for m in response.models:
            models.append(
                {"name": m.name, "version": m.version, "state": m.state, **({"reason": m.reason} if m.reason else {})}
            )
        return json_response(models)

    async def load(request: Any) -> Any:
        body = await request.body()
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            raise InvalidInput("the request body is not JSON") from None
        parameters = (parsed.get("parameters") if isinstance(parsed, dict) else None) or {}
        if not isinstance(parameters, dict):
            raise InvalidInput("field 'parameters' must be an object")
        message = oip.RepositoryModelLoadRequest(model_name=request.path_params["name"])
        if isinstance(parameters.get("uri"), str):
            message.parameters["uri"].string_param = parameters["uri"]
        await tier.RepositoryModelLoad(message, None)
        return json_response({})

    async def unload(request: Any) -> Any:
        message = oip.RepositoryModelUnloadRequest(model_name=request.path_params["name"])
        await tier.RepositoryModelUnload(message, None)
        return json_response({})

    routes = [Route("/v2", handled(server_metadata, error_body), methods=["GET"])]
    routes += [Route("/v2/health/live", live, methods=["GET"]), Route("/v2/health/ready", ready, methods=["GET"])]
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(base, handled(metadata, error_body), methods=["GET"]),
            Route(f"{base}/ready", handled(model_ready, error_body), methods=["GET"]),
            Route(f"{base}/infer", handled(infer, error_body), methods=["POST"]),
        ]
    routes.append(Route("/v2/repository/index", handled(index, error_body), methods=["POST"]))
    routes.append(Route("/v2/repository/models/{name}/load", handled(load, error_body), methods=["POST"]))
    routes.append(Route("/v2/repository/models/{name}/unload", handled(unload, error_body), methods=["POST"]))
    return Starlette(routes=routes)
