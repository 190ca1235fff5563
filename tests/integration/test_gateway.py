"""Fail closed at the handshake: no token, an expired one, another key's, ``alg=none``, an
unknown key id or a missing subprotocol get no connection; EdDSA and RS256 tokens from a
JWKS file do; the operational endpoints answer without a token."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from c2bus.adapters.auth import mint, verifier_for
from c2bus.adapters.kafka import client_options
from c2bus.adapters.topics import TopicNames
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.core.protocol import MAX_FRAME_BYTES, MAX_REQUEST_BYTES, SUBPROTOCOL, CloseCode
from c2bus.services.gateway.app import Gateway
from tests.integration.services import AUDIENCE, ISSUER, Console, Env, gateway, running
from tests.integration.test_pipeline import produce, track
from tests.unit.test_request_limits import largest_submit


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
    other = Env.create(env.kafka, env.prefix, tmp_path / "other")
    expired = env.token(ttl_s=60, now=time.time() - 3600)
    valid = jwt.decode(env.token(), options={"verify_signature": False})
    async with gateway(env) as gw:
        assert await refused(gw.port, None) == (401, "a bearer token is required\n")
        status, body = await refused(gw.port, expired)
        assert (status, body.strip()) == (401, "token expired")
        status, body = await refused(gw.port, other.token())  # another deployment's key
        assert status == 401 and body.startswith("token signed by an unknown key"), body
        status, body = await refused(gw.port, unsigned(valid))
        assert (status, body.strip()) == (
            401,
            "token algorithm 'none' not allowed (EdDSA, RS256, HS256)",
        )
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
        # one token, one place: in the header and the query too (even the same one), or
        # the parameter twice, is refused before any session exists
        for path, header in (
            (f"/?access_token={env.token()}", env.token()),
            (f"/?access_token={env.token()}&access_token={env.token(nation='POL')}", None),
        ):
            with pytest.raises(InvalidStatus) as err:
                async with connect(
                    f"ws://127.0.0.1:{gw.port}{path}",
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers={"Authorization": f"Bearer {header}"} if header else {},
                ):
                    pass
            assert err.value.response.status_code == 401
            assert b"more than one token" in err.value.response.body
        refused = gw.registry.get_sample_value(
            "c2bus_gateway_refused_total", {"reason": "ambiguous"}
        )
        assert refused == 2


async def test_bad_client_messages_get_correlated_errors(env: Env) -> None:
    async with gateway(env) as gw, Console.connect(gw.port, env.token()) as console:
        requests = {
            "x1": ({"streams": ["bogus"]}, "bad_request"),
            "x2": ({"streams": ["sa"], "units": "SOME-OTHER-UNIT"}, "forbidden"),
            "x3": ({"streams": ["sa"], "positions": {"elsewhere/0": 3}}, "bad_position"),
            "x4": ({"streams": ["sa"], "types": ["c2bus.decision.v1"]}, "bad_request"),
            # an area that could match nothing (its south north of its north)
            "x5": (
                {"streams": ["sa"], "area": {"south": 55, "west": 5, "north": 50, "east": 6}},
                "bad_request",
            ),
        }
        for correlation, (fields, _) in requests.items():
            await console.ws.send(json.dumps({"op": "subscribe", "id": correlation, **fields}))
        for correlation, (_, code) in requests.items():
            error = await console.reply_to(correlation, ("error",))
            assert error["code"] == code, error
        # nested deeper than a decoder recurses (~20 kB): an error frame, not a dead reader
        await console.ws.send("[" * 10_000 + "]" * 10_000)
        assert (await console.reply_to("", ("error",)))["code"] == "bad_request"
        # the protocol is text: a binary frame is refused, correlated
        await console.ws.send(json.dumps({"op": "ping", "id": "b1"}).encode())
        binary = await console.reply_to("b1", ("error", "pong"))
        assert binary["op"] == "error" and binary["code"] == "bad_request", binary
        await console.ws.send(json.dumps({"op": "ping", "id": "p1"}))
        assert await console.reply_to("p1", ("pong",)) == {"op": "pong", "id": "p1"}
        # every reply to a subscribe names it, the end of its snapshot and its live too
        await console.ws.send(json.dumps({"op": "subscribe", "id": "s9", "streams": ["sa"]}))
        for op in ("subscribed", "snapshot_end", "live"):
            assert (await console.reply_to("s9", (op,)))["id"] == "s9"


async def test_request_limits_agree_with_the_schema_and_the_docs(env: Env) -> None:
    """The largest submit the schema accepts is taken; a longer request gets a too_large
    error and the connection stays open; a message past the frame limit closes it with
    1009, as documented."""
    largest = largest_submit()["directive"]
    largest.update(
        kind="MOVE",
        target="POL-12BDE",
        expires=(datetime.now(UTC) + timedelta(hours=2)).isoformat(),
    )
    largest.pop("valid_from")
    token = env.token(unit="MNC-NE", roles=("console", "commander"))
    async with gateway(env) as gw, Console.connect(gw.port, token, ("sa",)) as console:
        assert await console.submit(largest)  # about 198 KB, as a client writes it
        await console.ws.send(
            json.dumps({"op": "ping", "id": "big", "pad": " " * MAX_REQUEST_BYTES})
        )
        refused = await console.reply_to("", ("error",))
        assert refused["code"] == "too_large", refused
        await console.ws.send(json.dumps({"op": "ping", "id": "after"}))
        assert await console.reply_to("after", ("pong",)) == {"op": "pong", "id": "after"}
        await console.ws.send("x" * (MAX_FRAME_BYTES + 1))
        await closed_with(console.ws, CloseCode.MESSAGE_TOO_BIG, 10)


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


async def test_ops_endpoints_answer_on_their_own_listener(env: Env) -> None:
    """Metrics are the operators': served on the ops listener, not on the console port
    (health and readiness answer on both, for load balancers in front of consoles)."""
    async with gateway(env) as gw:
        assert gw.ops.port not in (0, gw.port)
        for path, needle in (("/healthz", "ok"), ("/readyz", "ready"), ("/metrics", "c2bus_")):
            status, body = await asyncio.to_thread(get, f"http://127.0.0.1:{gw.ops.port}{path}")
            assert status == 200
            assert needle in body
        for path, needle in (("/healthz", "ok"), ("/readyz", "ready")):
            status, body = await asyncio.to_thread(get, f"http://127.0.0.1:{gw.port}{path}")
            assert (status, needle in body) == (200, True)
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(get, f"http://127.0.0.1:{gw.port}/metrics")
        assert refused.value.code == 401  # a console's handshake, which needs a token
        assert "c2bus_" not in refused.value.read().decode()


def small_receive_buffer(port: int) -> socket.socket:
    """A client socket whose kernel receive buffer cannot grow to tens of megabytes."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", port))
    return sock


def stalling(port: int, token: str) -> Any:
    """A console connection whose client stops reading once a few frames are queued."""
    return connect(
        f"ws://127.0.0.1:{port}",
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {token}"},
        max_queue=4,  # the client library stops reading from the socket too
        sock=small_receive_buffer(port),
    )


async def closed_with(ws: Any, code: CloseCode, timeout_s: float = 30) -> str:
    """Read until the gateway closes ``ws``; it closed with ``code``. The close reason."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code
    return closed.value.rcvd.reason


async def closed_as_slow(stalled: Any) -> str:
    """The stalled console is closed with the documented code (read to find out); the
    close reason."""
    return await closed_with(stalled, CloseCode.SLOW_CONSUMER)


def slow_disconnects(gw: Gateway, reason: str) -> float | None:
    return gw.registry.get_sample_value("c2bus_gateway_slow_disconnects_total", {"reason": reason})


async def test_a_console_that_stops_reading_is_closed_as_slow_not_silently_starved(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    # Large events (4 KB of remarks that do not compress) fill the socket buffers between
    # gateway and console quickly: 20 MB in all, against a 4 MiB outbox.
    doc = valid_example("sa-unit-status")
    doc["data"]["remarks"] = base64.b64encode(os.urandom(3000)).decode()

    def unit_status(i: int) -> bytes:  # one unit each: nothing can be conflated
        doc["data"]["unit_id"] = f"U{i}"
        return json.dumps(doc).encode()

    count = 5000
    async with (
        gateway(env, C2BUS_GATEWAY_BUFFER_BYTES=str(4 << 20)) as gw,
        stalling(gw.port, env.token()) as stalled,
        Console.connect(gw.port, env.token(nation="POL")) as healthy,
    ):
        await stalled.recv()  # welcome
        await stalled.send(json.dumps({"op": "subscribe", "streams": ["sa"]}))
        await stalled.recv()  # subscribed; from here on it reads nothing
        # The healthy console reads all along, so it keeps up.
        reading = asyncio.create_task(
            healthy.events_until(lambda _: len(healthy.frames) > count, 90)
        )
        producer = AIOKafkaProducer(**client_options(env.kafka), linger_ms=20)
        await producer.start()
        try:
            for i in range(count + 1):
                await producer.send(topics.sa, unit_status(i), key=f"U{i}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        await reading
        assert len(healthy.frames) == count + 1  # everything, nothing dropped
        assert len({f["pos"] for f in healthy.frames}) == count + 1  # and nothing twice
        # The stalled one is closed with the documented code once its buffer is full.
        assert await closed_as_slow(stalled) == "slow consumer: resume"
        assert slow_disconnects(gw, "outbox_full") == 1
        assert slow_disconnects(gw, "no_pong") == 0


async def test_a_console_that_stops_reading_at_an_ordinary_rate_is_found_by_its_heartbeat(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    """A few events a second would take hours to fill an outbox: the ping the console no
    longer answers finds it instead, and it is closed with 4008 as the docs say (not the
    WebSocket library's 1011), while a console that reads is served on."""
    sent = [f"hb-{i}" for i in range(10)]
    async with (
        gateway(env, C2BUS_GATEWAY_HEARTBEAT_S="1") as gw,
        stalling(gw.port, env.token()) as stalled,
        Console.connect(gw.port, env.token(nation="POL"), ("sa",)) as healthy,
    ):
        assert json.loads(await stalled.recv())["heartbeat_s"] == 1
        await stalled.send(json.dumps({"op": "subscribe", "id": "s", "streams": ["sa"]}))
        assert json.loads(await stalled.recv())["op"] == "subscribed"
        stalled.transport.pause_reading()  # from here on it reads nothing, pings neither
        records = [(b"T1", track(valid_example, i, "NATO UNCLASSIFIED", "NATO")) for i in sent]
        await produce(env.kafka, topics.sa, *records)
        await healthy.events_with(set(sent))
        await asyncio.sleep(3.5)  # a ping, its timeout, and some
        stalled.transport.resume_reading()
        assert await closed_as_slow(stalled) == "slow consumer: no pong within 1 s: resume"
        assert slow_disconnects(gw, "no_pong") == 1
        assert slow_disconnects(gw, "outbox_full") == 0
        # The console that reads answered every ping and is still served.
        await produce(
            env.kafka,
            topics.sa,
            (b"T1", track(valid_example, "hb-late", "NATO UNCLASSIFIED", "NATO")),
        )
        await healthy.events_with({*sent, "hb-late"})


async def test_eddsa_and_rs256_tokens_from_a_jwks_file(env: Env, tmp_path: Path) -> None:
    ed_key, rsa_key = ed25519.Ed25519PrivateKey.generate(), rsa.generate_private_key(65537, 2048)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps(
            {
                "keys": [
                    {
                        **json.loads(OKPAlgorithm.to_jwk(ed_key.public_key())),
                        "kid": "ed-1",
                        "alg": "EdDSA",
                    },
                    {
                        **json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())),
                        "kid": "rsa-1",
                        "alg": "RS256",
                    },
                ]
            }
        )
    )
    settings = env.settings("gateway", C2BUS_JWT_JWKS_FILE=str(jwks))
    service = Gateway(settings, verifier_for(settings.auth))
    identity = Identity("hq-ops", "NLD", Classification.NATO_SECRET, "NLD-11AMB", frozenset())

    def signed(key: object, alg: str, kid: str) -> str:
        return mint(key, identity, audience=AUDIENCE, issuer=ISSUER, algorithm=alg, kid=kid)

    async with running(service, lambda: service.ready):
        for token in (signed(ed_key, "EdDSA", "ed-1"), signed(rsa_key, "RS256", "rsa-1")):
            async with Console.connect(service.port, token) as console:
                assert console.welcome["identity"]["unit"] == "NLD-11AMB"
        stranger = ed25519.Ed25519PrivateKey.generate()
        status, body = await refused(service.port, signed(stranger, "EdDSA", "ed-1"))
        assert (status, body.strip()) == (401, "token signature does not verify")
        status, body = await refused(service.port, signed(ed_key, "EdDSA", "ed-9"))
        assert (status, body.strip()) == (401, "token signed by an unknown key (kid 'ed-9')")


async def test_a_token_that_expires_mid_session_closes_the_session(env: Env) -> None:
    async with gateway(env) as gw:
        issued = time.time()
        token = env.token(ttl_s=3, now=issued)
        expires_at = int(issued) + 3
        async with Console.connect(gw.port, token) as console:
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(15):
                    while True:
                        await console.ws.recv()
        assert time.time() >= expires_at  # not a moment before the token's exp
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CloseCode.TOKEN_EXPIRED
        assert gw.registry.get_sample_value("c2bus_gateway_expired_sessions_total") == 1


async def test_revoking_a_subject_closes_its_live_session_and_refuses_it_again(
    env: Env, tmp_path: Path
) -> None:
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("# none\n")
    settings = env.settings("gateway", C2BUS_JWT_REVOCATION_FILE=str(revoked))
    service = Gateway(settings, verifier_for(settings.auth))
    async with running(service, lambda: service.ready):
        async with (
            Console.connect(service.port, env.token(unit="POL-12BDE")) as victim,
            Console.connect(service.port, env.token(unit="MNC-NE")) as bystander,
        ):
            revoked.write_text("sub:test-pol-12bde\n")  # the subject env.token gives POL-12BDE
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await victim.ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                CloseCode.REVOKED,
                "subject revoked",
            )
            await bystander.ws.send(json.dumps({"op": "ping", "id": "still-here"}))
            assert await bystander.reply_to("still-here", ("pong",)) == {
                "op": "pong",
                "id": "still-here",
            }
        status, body = await refused(service.port, env.token(unit="POL-12BDE"))
        assert (status, body.strip()) == (401, "subject revoked")


async def test_a_stalled_console_is_closed_and_the_others_get_every_event(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    """Two phases of the same paced SA stream to three reading consoles: without, then
    with a console that stops reading. The stalled one is closed as slow; the others get
    every event of both phases; the bytes the gateway holds for consoles stay bounded.
    (What a stalled console costs the others in latency is measured by
    ``loadtests/gateway_fanout.py``'s stalled scenario, not asserted here.)"""
    doc = valid_example("sa-unit-status")
    doc["data"]["remarks"] = base64.b64encode(os.urandom(600)).decode()  # about 1 KB events
    limit = 256 * 1024

    def unit_status(i: int) -> bytes:
        doc["id"] = f"e-{i}"
        doc["time"] = datetime.now(UTC).isoformat()
        doc["data"]["unit_id"] = f"U{i}"
        return json.dumps(doc).encode()

    async def phase(start: int, count: int, consoles: list[Console]) -> list[Any]:
        producer = AIOKafkaProducer(**client_options(env.kafka), linger_ms=0)
        await producer.start()
        readers = [
            asyncio.create_task(c.events_with({f"e-{i}" for i in range(start, start + count)}, 60))
            for c in consoles
        ]
        try:
            for i in range(start, start + count):  # 400 events per second
                await producer.send(topics.sa, unit_status(i), key=f"U{i}".encode())
                if i % 20 == 0:
                    await asyncio.sleep(0.05)
                    queued.append(gw.registry.get_sample_value("c2bus_gateway_queued_bytes") or 0)
            await producer.flush()
        finally:
            await producer.stop()
        await asyncio.gather(*readers)
        return [
            f
            for c in consoles
            for f in c.frames
            if f.get("op") == "event" and start <= int(f["event"]["id"][2:]) < start + count
        ]

    queued: list[float] = []
    async with (
        gateway(env, C2BUS_GATEWAY_BUFFER_BYTES=str(limit)) as gw,
        Console.connect(gw.port, env.token(), ("sa",)) as a,
        Console.connect(gw.port, env.token(nation="POL"), ("sa",)) as b,
        Console.connect(gw.port, env.token(nation="NLD"), ("sa",)) as c,
    ):
        before = await phase(0, 1500, [a, b, c])
        async with stalling(gw.port, env.token()) as stalled:
            await stalled.send(json.dumps({"op": "subscribe", "streams": ["sa"]}))
            during = await phase(1500, 1500, [a, b, c])
            await closed_as_slow(stalled)

    assert len(before) == len(during) == 3 * 1500  # every event, to every reading console
    assert max(queued) <= 4 * limit  # the stalled console's outbox never grew past its bound
