"""The one table from error classes to status codes, gRPC and HTTP, beside the errors
(`splitserve.core.errors`): what a client sees for any exception a handler raises, whichever door
(gRPC, REST, OpenAI routes) it came in by."""

from __future__ import annotations

import logging
import uuid

import grpc

from splitserve.core import errors

log = logging.getLogger("splitserve")

# The one table from error classes to status codes: gRPC, and HTTP for the REST doors
# (`http_status`: one HTTP status per gRPC code).
STATUS_CODES: dict[type[errors.SplitServeError], tuple[grpc.StatusCode, int]] = {
    errors.InvalidInput: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    errors.ModelNotFound: (grpc.StatusCode.NOT_FOUND, 404),
    errors.ModelNotReady: (grpc.StatusCode.UNAVAILABLE, 503),
    errors.Overloaded: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    errors.DeadlineExceeded: (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    errors.Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, 401),
    errors.BundleMismatch: (grpc.StatusCode.FAILED_PRECONDITION, 409),
    errors.BundleError: (grpc.StatusCode.FAILED_PRECONDITION, 409),
    errors.ExportError: (grpc.StatusCode.FAILED_PRECONDITION, 409),
    errors.TemplateError: (grpc.StatusCode.INTERNAL, 500),
}
# gRPC codes no error class has (a downstream hop's transport failures), for `http_status`.
_TRANSPORT_HTTP = {grpc.StatusCode.OK: 200, grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.CANCELLED: 499}

# The longest status message sent: gRPC carries it in a header, and headers past ~8 KiB break
# the call (RESOURCE_EXHAUSTED "received metadata size exceeds ...") instead of reporting the error.
MAX_DETAILS_CHARS = 1024


def _cut(message: str) -> str:
    return message if len(message) <= MAX_DETAILS_CHARS else message[: MAX_DETAILS_CHARS - 1] + "…"


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a client sees for an exception raised by a handler (its message cut short)."""
    if isinstance(exc, grpc.aio.AioRpcError):  # a downstream tier's answer, passed through
        return exc.code(), _cut(exc.details() or exc.code().name)
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls][0], _cut(str(exc))
    if isinstance(exc, errors.SplitServeError):
        return grpc.StatusCode.INTERNAL, _cut(str(exc))
    incident = uuid.uuid4().hex[:12]
    log.error("unexpected error (incident %s)", incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); see the server log"


# Trailing metadata of a RESOURCE_EXHAUSTED sent for the tier's load (`errors.Overloaded.load`):
# the gateway lowers its admission ceiling on these only, not on a request refused for itself.
LOAD_REFUSAL = (("splitserve-refusal", "load"),)


def is_load_refusal(exc: grpc.aio.AioRpcError) -> bool:
    """A hop's answer: RESOURCE_EXHAUSTED for the load behind it (see LOAD_REFUSAL)."""
    return exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and LOAD_REFUSAL[0] in tuple(exc.trailing_metadata() or ())


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status the REST doors answer for a gRPC status code (the table's HTTP column)."""
    for grpc_code, http in STATUS_CODES.values():
        if grpc_code == code:
            return http
    return _TRANSPORT_HTTP.get(code, 500)
