"""The Ray Serve transport's pieces that need no cluster (splitserve/ray_serve): a message crosses
as its type name and bytes; a tier's refusal comes back as the gRPC error its server would have sent
(so the gateway's retries and status table apply); Serve's proxy answer for a dead gateway replica
is recognised (it is remapped to UNAVAILABLE) and nothing else is. On a cluster:
tests/cli/test_ray_cluster.py."""

from __future__ import annotations

import grpc

from gateway_svc.versions import mismatch
from protos import grpc_predict_v2_pb2 as oip
from protos import splitserve_pb2 as pb
from splitserve.ray_serve.handles import Refusal, Wire
from splitserve.ray_serve.proxy import replica_died


def test_messages_cross_as_bytes_and_come_back_equal() -> None:
    for message in (pb.PreprocessRequest(model="m", fingerprint="f"), oip.ModelInferRequest(model_name="x")):
        wire = Wire.of(message)
        assert isinstance(wire.data, bytes)
        assert wire.message() == message and type(wire.message()) is type(message)


def test_a_refusal_is_the_grpc_error_the_tier_would_send() -> None:
    error = Refusal("FAILED_PRECONDITION", "bundle mismatch: the gateway's pick is for bundle 'a'").error()
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert mismatch(error)  # the gateway sends it to another replica, as over gRPC
    invalid = Refusal("INVALID_ARGUMENT", "record 0 (id='a7'): field 'text' is empty").error()
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT and "field 'text'" in (invalid.details() or "")


def test_only_a_dead_replica_is_remapped() -> None:
    died = "The actor died unexpectedly before finishing this task.\n\tclass_name: ServeReplica:splitserve:gateway"
    assert replica_died(grpc.StatusCode.INTERNAL, died)
    assert replica_died(grpc.StatusCode.INTERNAL, died.encode())
    assert not replica_died(grpc.StatusCode.INTERNAL, "internal error (incident 0123456789ab); see the server log")
    assert not replica_died(grpc.StatusCode.INVALID_ARGUMENT, died)
    assert not replica_died(grpc.StatusCode.INTERNAL, None)
