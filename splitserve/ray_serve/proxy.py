"""What Serve's gRPC proxy is given (`grpc_options.grpc_servicer_functions`): the gateway's
servicer registration, with two adjustments.

- The generated messages made picklable by reference: the proxy pickles each request to the
  ingress replica, and the generated classes name their module as protoc saw it (`splitserve_pb2`,
  not `protos.splitserve_pb2`), so both ends alias that name (`aliased`).
- A request whose ingress (gateway) replica died while it held it (kill -9, its host lost) is
  answered UNAVAILABLE, which clients retry, instead of the INTERNAL Serve's proxy answers for a
  replica's `RayActorError`: nothing was answered, and every gateway call may be sent again. This
  wraps the proxy's unary handlers (`service_handler_factory` of Serve's gRPC server, where it has
  one; elsewhere the registration is Serve's own).
- The same over HTTP (REST, OpenAI routes; Serve's HTTP proxy runs in the same proxy process): 503
  with the REST door's error JSON (`retry`), instead of Serve's 500, for a request whose gateway
  replica died before it answered anything (`retriable_http_status`, wrapping the proxy's
  `get_http_response_status` where Serve has it). A stream already answering cannot change its
  status: it ends short, as any stream whose server died."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import grpc

from protos import grpc_predict_v2_pb2, splitserve_pb2, splitserve_pb2_grpc
from splitserve.core.status import http_status

RETRY = "the gateway replica died during the call; retry"


def aliased() -> None:
    """The generated modules under the names their classes give (for pickle); idempotent."""
    for module in (splitserve_pb2, grpc_predict_v2_pb2):
        sys.modules.setdefault(module.__name__.rpartition(".")[2], module)


def replica_died(code: Any, details: str | bytes | None) -> bool:
    """Serve's proxy's answer for a call whose replica died (`RayActorError`'s message)."""
    text = (details.decode(errors="replace") if isinstance(details, bytes) else details or "").lower()
    return code == grpc.StatusCode.INTERNAL and "actor" in text and ("died" in text or "unavailable" in text)


def retriable_http_status(status_of: Any) -> Any:
    """Serve's HTTP status for an exception (`status_of`), but 503 (UNAVAILABLE's) with the REST
    door's error JSON where the ingress replica died (`RayActorError`: Serve says 500)."""
    from ray.exceptions import RayActorError

    if getattr(status_of, "splitserve_retriable", False):
        return status_of

    def status(exc: BaseException, *args: Any, **kwargs: Any) -> Any:
        answer = status_of(exc, *args, **kwargs)
        if not isinstance(exc, RayActorError) or answer.code != 500:
            return answer
        error: Any = {"error": {"code": "UNAVAILABLE", "message": RETRY}}  # Serve sends it as JSON
        return dataclasses.replace(answer, code=http_status(grpc.StatusCode.UNAVAILABLE), message=error)

    status.splitserve_retriable = True  # type: ignore[attr-defined]
    return status


def add_gateway_servicer(servicer: Any, server: Any) -> None:
    aliased()
    from ray.serve._private import proxy

    if hasattr(proxy, "get_http_response_status"):  # the HTTP proxy, in this process too
        proxy.get_http_response_status = retriable_http_status(proxy.get_http_response_status)
    factory = getattr(server, "service_handler_factory", None)
    if factory is not None:

        def retriable_factory(service_method: str, streaming_type: Any) -> Any:
            handler = factory(service_method=service_method, streaming_type=streaming_type)
            if getattr(streaming_type, "name", "") != "UNARY_UNARY":
                return handler

            async def unary(request_proto: Any, context: Any) -> Any:
                response = await handler(request_proto, context)
                if replica_died(context.code(), context.details()):
                    context.set_code(grpc.StatusCode.UNAVAILABLE)
                    context.set_details(RETRY)
                return response

            return unary

        server.service_handler_factory = retriable_factory
    splitserve_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
