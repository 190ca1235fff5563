"""The HTTP side of the console port: health and readiness (for load balancers in front
of consoles; metrics are on the ops listener), and the handshake's authentication (a bearer
token in the ``Authorization`` header, or the ``access_token`` query parameter for
browsers). A handshake without a valid token is refused with 401 before any session
exists."""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from prometheus_client import Counter
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from c2bus.adapters.auth import TokenVerifier, bearer_token
from c2bus.errors import AuthError

log = logging.getLogger(__name__)


def token_of(request: Request) -> str | None:
    """The request's token, from its ``Authorization`` header or its ``access_token``
    parameter; :class:`AuthError` if it carries more than one (both, or the parameter
    twice): which would count is not the client's to guess (RFC 6750, one method per
    request), so the handshake fails closed."""
    header = bearer_token(request.headers.get("Authorization", ""))
    found = [header] if header is not None else []
    found += parse_qs(urlsplit(request.path).query).get("access_token", [])
    if len(found) > 1:
        raise AuthError(
            "more than one token: send one, in the Authorization header or the "
            "access_token parameter"
        )
    return found[0] if found else None


class Handshake:
    def __init__(
        self,
        verifier: TokenVerifier,
        refused: Counter,
        ready: Callable[[], bool],
    ) -> None:
        self.verifier = verifier
        self.refused = refused
        self.ready = ready

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, '{"status": "ok"}\n')
        if path == "/readyz":
            if self.ready():
                return connection.respond(HTTPStatus.OK, '{"status": "ready"}\n')
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, '{"status": "not ready"}\n')
        try:
            token = token_of(request)
        except AuthError as exc:
            return self._refuse(connection, "ambiguous", str(exc))
        if not token:
            return self._refuse(connection, "missing", "a bearer token is required")
        try:
            self.verifier.verify(token)
        except AuthError as exc:
            return self._refuse(connection, "invalid", str(exc))
        if not self.ready():
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "gateway not ready\n")
        return None  # the handler verifies again: nothing is kept for handshakes that fail

    def _refuse(self, connection: ServerConnection, reason: str, message: str) -> Response:
        self.refused.labels(reason).inc()
        log.info(
            "console.refused", extra={"reason": message, "remote": str(connection.remote_address)}
        )
        response = connection.respond(HTTPStatus.UNAUTHORIZED, message + "\n")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
