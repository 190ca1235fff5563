"""Fail closed at the handshake: no token, an expired one, another key's, ``alg=none`` or a
missing subprotocol get no connection; the operational endpoints answer without a token."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.gateway.protocol import SUBPROTOCOL
from services.runtime.topics import TopicNames
from tests.integration.services import Console, Env, gateway


@pytest.fixture
def env(kafka_bootstrap: str, prefix: str, topics: TopicNames, tmp_path: Path) -> Env:
    return Env.create(kafka_bootstrap, prefix, tmp_path)


async def refused(port: int, token: str | None, subprotocol: bool = True) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with pytest.raises(InvalidStatus) as err:
        async with connect(
            f"ws://127.0.0.1:{port}",
            subprotocols=[SUBPROTOCOL] if subprotocol else None,  # type: ignore[list-item]
            additional_headers=headers,
        ):
            pass
    response = err.value.response
    return response.status_code, response.body.decode()


def unsigned(claims: dict[str, object]) -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_tokens_that_must_not_connect(env: Env, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = Env.create(env.bootstrap, env.prefix, tmp_path / "other")
    expired = env.token(ttl_s=60, now=time.time() - 3600)
    valid = jwt.decode(env.token(), options={"verify_signature": False})
    async with gateway(env) as gw:
        assert await refused(gw.port, None) == (401, "a bearer token is required\n")
        status, body = await refused(gw.port, expired)
        assert (status, body.strip()) == (401, "token expired")
        status, body = await refused(gw.port, other.token())
        assert (status, body.strip()) == (401, "token signature does not verify")
        status, body = await refused(gw.port, unsigned(valid))
        assert status == 401
        assert "algorithm" in body or "invalid token" in body
        status, _ = await refused(gw.port, "not-a-jwt")
        assert status == 401
        # A valid token without the subprotocol still gets no session.
        status, _ = await refused(gw.port, env.token(), subprotocol=False)
        assert status == 400
        # And a valid token with it does.
        async with Console.connect(gw.port, env.token(unit="MNC-NE")) as console:
            assert console.welcome["identity"]["unit"] == "MNC-NE"
            assert console.welcome["protocol"] == SUBPROTOCOL


async def test_browser_style_query_token(env: Env) -> None:
    async with (
        gateway(env) as gw,
        connect(
            f"ws://127.0.0.1:{gw.port}/?access_token={env.token()}",
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        ) as ws,
    ):
        assert json.loads(await ws.recv())["op"] == "welcome"


async def test_bad_client_messages_get_correlated_errors(env: Env) -> None:
    async with gateway(env) as gw, Console.connect(gw.port, env.token()) as console:
        await console.ws.send(json.dumps({"op": "subscribe", "id": "x1", "streams": ["bogus"]}))
        error = json.loads(await console.ws.recv())
        assert error["op"] == "error"
        assert error["id"] == "x1"
        assert error["code"] == "bad_request"
        await console.ws.send(json.dumps({"op": "ping", "id": "p1"}))
        assert json.loads(await console.ws.recv()) == {"op": "pong", "id": "p1"}


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


async def test_ops_endpoints_answer_without_a_token(env: Env) -> None:
    async with gateway(env) as gw:
        for path, needle in (("/healthz", "ok"), ("/readyz", "ready"), ("/metrics", "c2bus_")):
            status, body = await asyncio.to_thread(get, f"http://127.0.0.1:{gw.port}{path}")
            assert status == 200
            assert needle in body
