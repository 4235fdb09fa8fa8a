"""What Serve's gRPC proxy is given (`grpc_options.grpc_servicer_functions`): the gateway's
servicer registration, with two adjustments.

- The generated messages made picklable by reference: the proxy pickles each request to the
  ingress replica, and the generated classes name their module as protoc saw it (`splitserve_pb2`,
  not `protos.splitserve_pb2`), so both ends alias that name (`aliased`).
- A request whose ingress (gateway) replica died while it held it (kill -9, its host lost) is
  answered UNAVAILABLE, which clients retry, instead of the INTERNAL Serve's proxy answers for a
  replica's `RayActorError`: nothing was answered, and every gateway call may be sent again. This
  wraps the proxy's unary handlers (`service_handler_factory` of Serve's gRPC server, where it has
  one; elsewhere the registration is Serve's own)."""

from __future__ import annotations

import sys
from typing import Any

import grpc

from protos import grpc_predict_v2_pb2, splitserve_pb2, splitserve_pb2_grpc


def aliased() -> None:
    """The generated modules under the names their classes give (for pickle); idempotent."""
    for module in (splitserve_pb2, grpc_predict_v2_pb2):
        sys.modules.setdefault(module.__name__.rpartition(".")[2], module)


def replica_died(code: Any, details: str | bytes | None) -> bool:
    """Serve's proxy's answer for a call whose replica died (`RayActorError`'s message)."""
    text = (details.decode(errors="replace") if isinstance(details, bytes) else details or "").lower()
    return code == grpc.StatusCode.INTERNAL and "actor" in text and ("died" in text or "unavailable" in text)


def add_gateway_servicer(servicer: Any, server: Any) -> None:
    aliased()
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
                    context.set_details("the gateway replica died during the call; retry")
                return response

            return unary

        server.service_handler_factory = retriable_factory
    splitserve_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
