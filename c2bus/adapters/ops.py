"""Operational endpoints every service serves: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` answers while the process runs; ``/readyz`` only while the service says it is
ready (its Kafka clients are up); ``/metrics`` is the Prometheus text format of the
service's own registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import h11
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from uvicorn.protocols.http.h11_impl import H11Protocol

from c2bus.errors import Refused

ReadyCheck = Callable[[], bool]


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a local service's ``url`` (``/readyz``, Prometheus's ``/-/ready``) answers
    200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (ours)
            return bool(response.status == 200)
    except OSError:  # refused, timed out, or an HTTP error status
        return False


def refusal(exc: Refused) -> JSONResponse:
    """The HTTP answer to a refused request: its status, ``detail`` and any ``problems``."""
    content: dict[str, Any] = {"detail": str(exc)}
    if exc.problems:
        content["problems"] = exc.problems
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return JSONResponse(content, status_code=exc.http_status, headers=headers)


def with_bodies(
    app: FastAPI, components: dict[str, Any], bodies: dict[str, dict[str, Any]]
) -> None:
    """Give ``app``'s OpenAPI document the request bodies its routes read themselves (raw,
    to stream them within a size limit): ``bodies`` maps a path to the ``content`` of its
    POST's body, ``components`` the schemas those refer to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, routes=app.routes, description=app.description
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            for path, content in bodies.items():
                schema["paths"][path]["post"]["requestBody"] = {
                    "required": True,
                    "content": content,
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI response with a JSON body of ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def refusal_responses(
    descriptions: dict[int, str], problem: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for the refusals a route gives (status: what it means), each with
    the body :func:`refusal` writes: ``detail`` (a sentence; a list where FastAPI itself
    refused a query parameter) and, where the body was wrong, ``problems``."""
    schema = {
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {"anyOf": [{"type": "string"}, {"type": "array"}]},
            "problems": {"type": "array", "items": problem or {"type": "object"}},
        },
    }
    responses: dict[int | str, dict[str, Any]] = {}
    for status, description in descriptions.items():
        response = json_response(description, schema)
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}
            }
        responses[status] = response
    return responses


#: How long a client may take to send a request's head, and then its body.
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
#: Connections and requests a service's HTTP server takes at once; beyond, 503.
CONCURRENCY_LIMIT = 512

#: The refusals every authenticated POST with a body can give.
BODY_REFUSALS = {
    401: "Missing or invalid bearer token",
    408: f"The body took longer than {BODY_TIMEOUT_S:g} s to arrive",
    413: "Body too large (refused as soon as it streams past the limit)",
    503: "Not ready, or Kafka did not take the request",
}


async def read_body(request: Request, limit: int, timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """The request's body, read as it streams in and refused (413) as soon as it passes
    ``limit`` bytes: a declared length over it is refused before anything is read. A body
    that takes longer than ``timeout_s`` to arrive is refused (408)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused("too_large", f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused("too_large", f"body larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Refused("timeout", f"the body took longer than {timeout_s:g}s to arrive") from None
    return b"".join(chunks)


class _HeadTimeout(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request head has not come in
    within ``HEAD_TIMEOUT_S`` of the connection or of the last response (a client trickling
    its headers would otherwise hold the connection for as long as it likes)."""

    head_timeout_s = HEAD_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_deadline is not None and self.conn.their_state is not h11.IDLE:
            self._head_deadline.cancel()  # the head is in: the body has its own timeout
            self._head_deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _head_late(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def ops_router(registry: CollectorRegistry, ready: ReadyCheck) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is running")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: the service's Kafka clients are up")
    async def readyz(response: Response) -> dict[str, str]:
        if ready():
            return {"status": "ready"}
        response.status_code = 503
        return {"status": "not ready"}

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def ops_app(title: str, registry: CollectorRegistry, ready: ReadyCheck) -> FastAPI:
    """A FastAPI app with only the operational endpoints (for services without an API)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(ops_router(registry, ready))
    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service's lifecycle owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """An ASGI app served by uvicorn inside the service's task group."""

    def __init__(
        self, app: FastAPI, host: str, port: int, head_timeout_s: float = HEAD_TIMEOUT_S
    ) -> None:
        self.host = host
        self.port = port
        protocol = type("HeadTimeout", (_HeadTimeout,), {"head_timeout_s": head_timeout_s})
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            http=protocol,
            limit_concurrency=CONCURRENCY_LIMIT,
            timeout_keep_alive=5,
        )
        self._server = _Server(config)
        self._socket: socket.socket | None = None
        self._done = asyncio.Event()

    def bind(self) -> int:
        """Bind the listening socket now (so port 0 resolves and conflicts fail early)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.set_inheritable(True)
        self._socket = sock
        self.port = sock.getsockname()[1]
        return self.port

    async def serve(self) -> None:
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self._done.set()

    def stop(self) -> None:
        self._server.should_exit = True

    async def stopped(self) -> None:
        """Wait until the server has finished (in-flight requests drained)."""
        await self._done.wait()
