"""The REST door of a server: an ASGI app (Starlette) served by uvicorn on the gRPC server's event
loop, beside its gRPC port, with the same TLS settings. A tier that has a REST API gives
`rest_app()`; `splitserve.core.grpc_server.start` serves it when the settings name a `rest_port`.

Errors answer with the HTTP status of the one error table (`splitserve.core.status.STATUS_CODES`).
Starlette and uvicorn are imported only when a REST port is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import grpc

from splitserve.core.settings import ServerSettings
from splitserve.core.status import http_status, status_of


def error_status(exc: BaseException) -> tuple[int, grpc.StatusCode, str]:
    """(HTTP status, gRPC status, message) of an exception, as the gRPC door would answer it."""
    code, message = status_of(exc)
    return http_status(code), code, message


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body, status, headers, media_type="application/json")


async def read_json(request: Any) -> Any:
    """The request's body as JSON; a body that is not raises InvalidInput (400)."""
    from splitserve.core.errors import InvalidInput

    body = await request.body()
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InvalidInput(f"the request body is not JSON ({exc})") from None


class RestServer:
    """uvicorn on a socket bound before it starts (so port 0 is known at once), stopped with the
    gRPC server: open connections get `grace_s` to finish their responses."""

    def __init__(self, app: Any, settings: ServerSettings, port: int):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # the gRPC server's loop owns SIGINT/SIGTERM

        self.socket = socket.create_server((settings.host, port), reuse_port=False)
        self.port: int = self.socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=max(int(settings.grace_s), 1),
            ssl_certfile=settings.tls_cert,
            ssl_keyfile=settings.tls_key,
            ssl_ca_certs=settings.tls_client_ca,
            ssl_cert_reqs=ssl.CERT_REQUIRED if settings.tls_client_ca else ssl.CERT_NONE,
        )
        self.server = Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.socket]))
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises what stopped it
                raise RuntimeError("the REST server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


def handled(handler: Any, error_body: Any = None) -> Any:
    """A route answering an exception with the HTTP status of the one error table, and a body
    `{"error": {"code": "INVALID_ARGUMENT", "message": ...}}` (or `error_body(code, message)`)."""

    async def route(request: Any) -> Any:
        try:
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 - this is the mapping point
            http, code, message = error_status(exc)
            body = error_body(code, message) if error_body else {"error": {"code": code.name, "message": message}}
            return json_response(body, http)

    return route


def sse_data(event: Any) -> str:
    """One server-sent event carrying a JSON value (or a plain string, e.g. OpenAI's [DONE])."""
    text = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n"


async def event_stream(events: Any, error_event: Any) -> Any:
    """Server-sent events from an async iterator of JSON values. The first is awaited before the
    response starts, so what fails early (a token, a bad record) answers with its HTTP status; a
    failure later ends the stream with `error_event(code, message)`. A client that goes away
    closes the iterator (and so cancels the call behind it)."""
    from starlette.responses import StreamingResponse

    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise

    async def body() -> Any:
        try:
            yield sse_data(first)
            async for event in events:
                yield sse_data(event)
        except Exception as exc:  # noqa: BLE001 - the status is already sent: the error is an event
            _, code, message = error_status(exc)
            yield sse_data(error_event(code, message))
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"cache-control": "no-cache"})
