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

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

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

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
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
