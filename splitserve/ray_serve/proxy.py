"""What Serve's gRPC proxy is given (`grpc_options.grpc_servicer_functions`): the gateway's
servicer registration, after making the generated messages picklable by reference. The proxy
pickles each request to the ingress replica, and the generated classes name their module as protoc
saw it (`splitserve_pb2`, not `protos.splitserve_pb2`), so both ends alias that name (`aliased`)."""

from __future__ import annotations

import sys
from typing import Any

from protos import grpc_predict_v2_pb2, splitserve_pb2, splitserve_pb2_grpc


def aliased() -> None:
    """The generated modules under the names their classes give (for pickle); idempotent."""
    for module in (splitserve_pb2, grpc_predict_v2_pb2):
        sys.modules.setdefault(module.__name__.rpartition(".")[2], module)


def add_gateway_servicer(servicer: Any, server: Any) -> None:
    aliased()
    splitserve_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
