"""Typed errors, one class per condition.

Stage logic raises these; one table maps them to gRPC and HTTP status codes
(`splitserve.core.status.STATUS_CODES`), applied by the gRPC interceptor
(`splitserve.core.interceptor.ErrorInterceptor`) and the REST doors alike. Messages are safe to show to clients; any other
exception becomes INTERNAL with a generic message.
"""

from __future__ import annotations

from typing import Any

# The most characters of a caller's value (a record id, a param value, a name) a message repeats.
ECHO_CHARS = 64


class SplitServeError(Exception):
    """Base class of every error whose message may be shown to a client."""


class InvalidInput(SplitServeError):
    """The request is malformed: a record, a field or a param is wrong (INVALID_ARGUMENT)."""


class ModelNotFound(SplitServeError):
    """The request names a model this server does not serve (NOT_FOUND)."""


class ModelNotReady(SplitServeError):
    """The server is still loading or is shutting down (UNAVAILABLE)."""


class Overloaded(SplitServeError):
    """Too much work in flight; retry later or elsewhere (RESOURCE_EXHAUSTED). `load`: refused for
    the work already there (a signal of load to whoever sent it: the gateway lowers its ceiling),
    not for this request alone (too big for the queue, a deadline shorter than its own work)."""

    def __init__(self, message: str, load: bool = True):
        super().__init__(message)
        self.load = load


class DeadlineExceeded(SplitServeError):
    """The request's deadline passed before its work was done (DEADLINE_EXCEEDED)."""


class Unauthenticated(SplitServeError):
    """The call carries no valid token (UNAUTHENTICATED)."""


class BundleMismatch(SplitServeError):
    """Tiers were loaded from different serving bundles (FAILED_PRECONDITION)."""


class BundleError(SplitServeError):
    """A serving bundle is missing, corrupt or not what a command expects."""


class TemplateError(SplitServeError):
    """A bundle's template broke its contract (returned the wrong thing) (INTERNAL)."""


class ExportError(SplitServeError):
    """Export failed, e.g. the ONNX graph does not match PyTorch within tolerance."""


def shown(value: Any, limit: int = ECHO_CHARS) -> str:
    """How a message repeats a caller's value: its repr, cut to `limit` characters with an ellipsis
    (an echoed value never makes a message too long for a gRPC status)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_list(values: list[Any], most: int = 10) -> str:
    """A list of a caller's values as messages repeat it: each cut short, at most `most` of them."""
    items = [shown(v) for v in values[:most]] + (["…"] if len(values) > most else [])
    return "[" + ", ".join(items) + "]"


def record_label(index: int, record_id: str | None) -> str:
    """How messages name a record: `record 3 (id='a7')` (a long id cut short)."""
    return f"record {index} (id={shown(record_id)})" if record_id else f"record {index}"
