"""Helpers to run c2bus services inside a test's event loop, on real Kafka and real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from websockets.asyncio.client import ClientConnection, connect

from c2bus.adapters.auth import LOCAL_ISSUER, LocalTokenKeys, TokenVerifier, load_jwks
from c2bus.adapters.ops import answers
from c2bus.adapters.policy_store import PolicyConflict, latest_versions, publish
from c2bus.adapters.settings import KafkaSettings, ServiceSettings
from c2bus.adapters.signing import LocalKeys
from c2bus.adapters.topics import TopicNames
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.core.policy.compiler import load_policy_document
from c2bus.core.protocol import SUBPROTOCOL
from c2bus.services.enforcer.app import Enforcer
from c2bus.services.gateway.app import Gateway
from c2bus.services.ingest.app import Ingest
from tests.conftest import ROOT


def kafka_vars(kafka: KafkaSettings) -> dict[str, str]:
    """The environment that points a c2bus process at ``kafka``: it authenticates as its own
    principal (its role's), with the password and CA from the same secrets directory."""
    return kafka.environment()


AUDIENCE = "c2bus"
ISSUER = "c2bus-local"


@dataclass
class Env:
    """Settings for services of one test: its topic prefix, fresh token and signing keys,
    ephemeral ports, and the secured cluster (``kafka``: the admin's settings; each service
    authenticates as its own principal, with its password from the same secrets directory)."""

    kafka: KafkaSettings
    prefix: str
    #: the test's token keys (EdDSA; services read their public JWKS only)
    tokens: LocalTokenKeys
    #: the test's record-signing keys and trust store (enforcer's, ingest's, gateway's)
    signing: LocalKeys

    @classmethod
    def create(cls, kafka: KafkaSettings, prefix: str, tmp_path: Path) -> Env:
        tokens = LocalTokenKeys(tmp_path / "tokens")
        tokens.ensure()
        signing = LocalKeys(tmp_path / "signing")
        signing.ensure()
        return cls(replace(kafka, topic_prefix=prefix), prefix, tokens, signing)

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    def as_principal(self, principal: str) -> KafkaSettings:
        """The cluster's settings for a client authenticating as ``principal``."""
        return replace(self.kafka, security=self.kafka.security.as_user(principal))

    def vars(self, **extra: str) -> dict[str, str]:
        return {
            **kafka_vars(self.kafka),
            "C2BUS_TOPIC_PREFIX": self.prefix,
            "C2BUS_JWT_DIR": str(self.tokens.dir),
            "C2BUS_SIGNING_DIR": str(self.signing.dir),
            "C2BUS_SHUTDOWN_TIMEOUT_S": "5",
            **extra,
        }

    def settings(self, service: str, **extra: str) -> ServiceSettings:
        defaults = {
            f"C2BUS_{service.upper()}_PORT": "0",
            "C2BUS_GATEWAY_OPS_PORT": "0",
            "C2BUS_INSTANCE": f"{service}-test",
        }
        env = self.vars(**(defaults | extra))
        return ServiceSettings.from_env(service, env)

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(None, AUDIENCE, ISSUER, public_keys=load_jwks(self.tokens.jwks_file))

    def mint(self, identity: Identity, ttl_s: int = 3600, now: float | None = None) -> str:
        """A token for ``identity``, as the local issuer mints them."""
        return self.tokens.mint(
            LOCAL_ISSUER, identity, audience=AUDIENCE, issuer=ISSUER, ttl_s=ttl_s, now=now
        )

    def token(
        self,
        unit: str = "JFC-BRUNSSUM",
        nation: str = "DEU",
        clearance: Classification = Classification.NATO_SECRET,
        roles: tuple[str, ...] = ("console",),
        ttl_s: int = 3600,
        now: float | None = None,
    ) -> str:
        identity = Identity(f"test-{unit.lower()}", nation, clearance, unit, frozenset(roles))
        return self.mint(identity, ttl_s, now)


@contextlib.asynccontextmanager
async def running(service: Any, ready: Any, timeout_s: float = 30.0) -> AsyncIterator[Any]:
    """Run ``service.run(stop)`` as a task until the block ends; wait for ``ready()`` first."""
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        async with asyncio.timeout(timeout_s):
            while not ready():
                if task.done():
                    task.result()  # raises what made it stop
                await asyncio.sleep(0.05)
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


REFERENCE_POLICY = ROOT / "deploy" / "policies" / "alliance.yaml"


async def publish_reference_policy(env: Env) -> None:
    """Version 1 of the reference policy on this test's policy topic (once)."""
    topic = TopicNames(env.prefix).policy
    if "alliance-main" in await latest_versions(env.kafka, topic):
        return
    doc = load_policy_document(REFERENCE_POLICY.read_bytes())
    try:
        await publish(env.kafka, topic, doc, None, "urn:test")
    except PolicyConflict:
        # A commit returns before its markers are written, so a publish just before may
        # not have shown above yet; the publish itself is fenced and saw it.
        latest = await latest_versions(env.kafka, topic)
        assert latest["alliance-main"].data.version == 1


@contextlib.asynccontextmanager
async def enforcer(env: Env, publish_policy: bool = True, **extra: str) -> AsyncIterator[Enforcer]:
    if publish_policy:
        await publish_reference_policy(env)
    service = Enforcer(env.settings("enforcer", **extra))
    async with running(service, lambda: service.ready) as s:
        yield s


@contextlib.asynccontextmanager
async def gateway(env: Env, **extra: str) -> AsyncIterator[Gateway]:
    service = Gateway(env.settings("gateway", **extra), env.verifier())
    async with running(service, lambda: service.ready) as s:
        yield s


@contextlib.asynccontextmanager
async def gateway_process(env: Env, instance: str) -> AsyncIterator[int]:
    """A gateway in a process of its own (``python -m c2bus.services.gateway``); yields its port
    once ``/readyz`` answers, stops it with SIGTERM at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    variables = env.vars(
        C2BUS_GATEWAY_PORT=str(port), C2BUS_GATEWAY_OPS_PORT="0", C2BUS_INSTANCE=instance
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "c2bus.services.gateway",
        env={**os.environ, **variables},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            while not await asyncio.to_thread(answers, f"http://127.0.0.1:{port}/readyz"):
                if process.returncode is not None:
                    assert process.stderr is not None
                    error = (await process.stderr.read()).decode()[-2000:]
                    raise AssertionError(f"gateway {instance} exited: {error}")
                await asyncio.sleep(0.2)
        yield port
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()


@contextlib.asynccontextmanager
async def ingest(env: Env) -> AsyncIterator[Ingest]:
    service = Ingest(env.settings("ingest"), env.verifier())
    async with running(service, lambda: service.producer is not None) as s:
        yield s


FRAMES = Draft202012Validator(
    json.loads((ROOT / "schemas" / "c2bus.v1.server-frame.schema.json").read_text())
)


class Console:
    """A real WebSocket client speaking c2bus.v1: collects frames, keeps its positions."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []  # event frames, in arrival order
        self.states: list[dict[str, Any]] = []  # snapshot (state) frames
        self.replies: list[dict[str, Any]] = []  # everything else after the welcome
        self.positions: dict[str, int] = {}
        self.welcome: dict[str, Any] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        port: int,
        token: str,
        streams: tuple[str, ...] = ("sa", "directives", "decisions", "status"),
        *,
        wait_live: bool = True,
        **subscription: Any,
    ) -> AsyncIterator[Console]:
        async with connect(
            f"ws://127.0.0.1:{port}",
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {token}"},
        ) as ws:
            console = cls(ws)
            console.welcome = json.loads(await ws.recv())
            FRAMES.validate(console.welcome)
            assert console.welcome["op"] == "welcome"
            await console.subscribe(streams, wait_live=wait_live, **subscription)
            yield console

    async def subscribe(
        self, streams: tuple[str, ...], *, wait_live: bool = True, **subscription: Any
    ) -> dict[str, Any]:
        """Subscribe and (``wait_live``) wait until the gateway says the console is live,
        i.e. has its snapshot or has caught up; returns the ``subscribed`` reply."""
        request = {"op": "subscribe", "id": "s", "streams": list(streams), **subscription}
        await self.ws.send(orjson.dumps(request).decode())
        reply = await self.reply_to("s", ("subscribed", "error"))
        assert reply["op"] == "subscribed", reply
        if wait_live:
            await self.reply_to("s", ("live",))
        return reply

    async def drain(self, quiet_s: float = 0.3) -> None:
        """Read whatever else comes until nothing has for ``quiet_s``."""
        with contextlib.suppress(TimeoutError):
            while True:
                await self.recv(quiet_s)

    async def recv(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """The next frame, with the bookkeeping a console does (positions, frame lists)."""
        async with asyncio.timeout(timeout_s):
            message: dict[str, Any] = json.loads(await self.ws.recv())
        FRAMES.validate(message)  # every frame keeps to the published contract
        op = message["op"]
        if op in ("event", "state"):
            message["received"] = datetime.now(UTC)  # for latency figures
            (self.frames if op == "event" else self.states).append(message)
            topic_partition, _, offset = message["pos"].rpartition("/")
            if op == "event":
                self.positions[topic_partition] = max(
                    self.positions.get(topic_partition, -1), int(offset)
                )
        else:
            for key, offset in message.get("positions", {}).items():
                self.positions[key] = max(self.positions.get(key, -1), offset)
            self.replies.append(message)
        return message

    async def submit(self, directive: dict[str, Any], correlation: str = "sub-1") -> str:
        """Submit a NATO SECRET directive releasable to NATO; return its id once accepted."""
        message = {
            "op": "submit",
            "id": correlation,
            "directive": directive,
            "classification": "NATO SECRET",
            "releasableto": "NATO",
        }
        await self.ws.send(json.dumps(message))
        reply = await self.reply_to(correlation, ("submitted", "error"))
        assert reply["op"] == "submitted", reply
        return str(reply["directive_id"])

    async def reply_to(
        self, correlation: str, ops: tuple[str, ...], timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Read until a non-event frame with one of ``ops`` and this correlation id (every
        reply carries its request's; an error for a request whose id could not be read,
        ""); earlier ones already read count too."""
        for message in self.replies:
            if message["op"] in ops and _answers(message, correlation):
                self.replies.remove(message)
                return message
        deadline = time.monotonic() + timeout_s
        while True:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            if message["op"] in ops and _answers(message, correlation):
                self.replies.remove(message)
                return message

    async def events_with(self, ids: set[str], timeout_s: float = 30.0) -> list[str]:
        """Collect event frames until every id in ``ids`` has arrived; return all ids."""
        seen = {event_id(f) for f in self.frames}
        if ids <= seen:
            return [event_id(f) for f in self.frames]

        def complete(frame: dict[str, Any]) -> bool:
            seen.add(event_id(frame))
            return ids <= seen

        try:
            await self.events_until(complete, timeout_s)
        except (AssertionError, TimeoutError) as exc:
            missing = sorted(ids - {event_id(f) for f in self.frames})
            raise AssertionError(f"{len(missing)} never arrived: {missing[:20]}") from exc
        return [event_id(f) for f in self.frames]

    async def events_until(self, predicate: Any, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Collect event frames until one satisfies ``predicate``; return all collected."""
        deadline = time.monotonic() + timeout_s
        checked = 0
        while True:
            for frame in self.frames[checked:]:
                if predicate(frame):
                    return self.frames
            checked = len(self.frames)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = self.frames[-1] if self.frames else None
                raise AssertionError(
                    f"no matching frame within {timeout_s}s; {len(self.frames)} frames, "
                    f"the last: {last}"
                )
            await self.recv(remaining)


async def eventually(predicate: Any, timeout_s: float = 20.0, interval_s: float = 0.1) -> None:
    """Wait until ``predicate()`` holds (state inside a service running in this loop)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(interval_s)


def _answers(message: dict[str, Any], correlation: str) -> bool:
    """Whether a reply is to the request ``correlation``: its id, or an error for a request
    whose id could not be read."""
    found = message.get("id")
    return found == correlation or (message["op"] == "error" and found == "")


def event_id(frame: dict[str, Any]) -> str:
    return str(frame["event"]["id"])


def lifecycle(directive_id: str, state: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a console's frame is the lifecycle step ``state`` of ``directive_id``."""
    return lambda f: (
        f["stream"] == "status"
        and f["event"]["data"]["directive_id"] == directive_id
        and f["event"]["data"]["state"] == state
    )
