"""What the Python client (`splitserve.client.Client`) raises: one family, one class per condition,
each carrying the gRPC status code and the server's message.

    from splitserve import errors
    from splitserve.client import Client

    with Client("127.0.0.1:50051") as client:
        try:
            results = client.predict(records)
        except errors.InvalidInput as exc:  # a record, a field or a param is wrong: fix the request
            print(exc.message)  # "record 3 (id='a7'): field 'text' is empty"
        except errors.Overloaded:  # the gateway refused the work early: retry later or elsewhere
            ...
        except errors.SplitServeError as exc:  # anything else the call ended with
            print(exc.code().name, exc.message)

| class | gRPC status | what to do |
|---|---|---|
| `InvalidInput` | INVALID_ARGUMENT | fix the request (the message names the record and the field) |
| `NotFound` | NOT_FOUND | ask for a model the gateway serves (`Client.info()`) |
| `Overloaded` | RESOURCE_EXHAUSTED | retry later, or with a longer deadline |
| `DeadlineExceeded` | DEADLINE_EXCEEDED | a longer `timeout_s`, or fewer records per request |
| `Unauthenticated` | UNAUTHENTICATED | pass `token=` |
| `BundleMismatch` | FAILED_PRECONDITION | tiers loaded different bundles (a rollout in progress): retry |
| `Unavailable` | UNAVAILABLE | the gateway stayed unreachable for the whole retry window |
| `ServerError` | INTERNAL, UNKNOWN, DATA_LOSS | report `incident_id`: the server logged the traceback under it |
| `SplitServeError` | any other | the base of them all |

Every class is also a `grpc.RpcError` with `.code()` and `.details()`, so code written against the
raw gRPC errors keeps working, and a subclass of the server-side class of the same condition in
`splitserve.core.errors` (`except splitserve.core.errors.InvalidInput` still catches the client's
own checks). Status codes map to classes in one place: `from_rpc_error`. `RETRIABLE`: the codes
of a refusal for a passing reason, worth trying again later.
"""

from __future__ import annotations

import re

import grpc

from splitserve.core import errors as core

__all__ = [
    "BundleMismatch",
    "DeadlineExceeded",
    "InvalidInput",
    "NotFound",
    "Overloaded",
    "RETRIABLE",
    "ServerError",
    "SplitServeError",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]


class SplitServeError(core.SplitServeError, grpc.RpcError):
    """The base of everything the client raises: `.code()` (a `grpc.StatusCode`), `.details()` and
    `.message` (the server's message, or the client's own for a check made before sending)."""

    default_code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.message = message
        self._code = code or self.default_code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self.message


class InvalidInput(SplitServeError, core.InvalidInput):
    """A record, a field or a param is wrong (INVALID_ARGUMENT); the message names which."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SplitServeError, core.ModelNotFound):
    """The request names a model the gateway does not serve (NOT_FOUND)."""

    default_code = grpc.StatusCode.NOT_FOUND


class Overloaded(SplitServeError, core.Overloaded):
    """Refused early, before any work, because it could not be done in time (RESOURCE_EXHAUSTED)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(SplitServeError, core.DeadlineExceeded):
    """The call's deadline (`timeout_s`) passed before its answer (DEADLINE_EXCEEDED)."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(SplitServeError, core.Unauthenticated):
    """The gateway wants a token this call did not carry (UNAUTHENTICATED)."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class BundleMismatch(SplitServeError, core.BundleMismatch):
    """Tiers loaded from different serving bundles (FAILED_PRECONDITION): retry once a rollout settled."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(SplitServeError, core.ModelNotReady):
    """The gateway could not be reached, or was not ready, for the whole retry window (UNAVAILABLE)."""

    default_code = grpc.StatusCode.UNAVAILABLE


class ServerError(SplitServeError):
    """The server failed (INTERNAL, UNKNOWN, DATA_LOSS). `incident_id`: the id under which it logged
    the traceback ("internal error (incident 1f2e3d4c5b6a)"), None when the message names none."""

    default_code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message, code)
        match = _INCIDENT.search(message)
        self.incident_id: str | None = match.group(1) if match else None


_INCIDENT = re.compile(r"\bincident ([0-9a-f]{6,32})\b")

# The one table from status codes to the client's classes (the servers' is
# `splitserve.core.status.STATUS_CODES`, from their error classes to status codes).
CLASSES: dict[grpc.StatusCode, type[SplitServeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: BundleMismatch,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.INTERNAL: ServerError,
    grpc.StatusCode.UNKNOWN: ServerError,
    grpc.StatusCode.DATA_LOSS: ServerError,
}

# The codes of a refusal for a passing reason: the same call may be answered later (overload, a
# restart, a rollout under way, a deadline missed under load). `splitserve predict --input` retries them.
RETRIABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
    }
)


def from_rpc_error(exc: grpc.RpcError) -> SplitServeError:
    """The family's error for a raw gRPC error (its code and message; an error of the family as is)."""
    if isinstance(exc, SplitServeError):
        return exc
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    details = exc.details() if callable(getattr(exc, "details", None)) else None  # type: ignore[attr-defined]
    return CLASSES.get(code, SplitServeError)(details or code.name, code)


def from_local(exc: core.SplitServeError) -> SplitServeError:
    """The family's error for a check the client made before sending (a record it cannot encode)."""
    if isinstance(exc, SplitServeError):
        return exc
    for cls in CLASSES.values():
        if isinstance(exc, tuple(b for b in cls.__bases__ if b is not SplitServeError)):
            return cls(str(exc))
    return SplitServeError(str(exc), grpc.StatusCode.INVALID_ARGUMENT)
