"""Simulated command posts: one console per unit of the policy, connected to the gateway,
issuing its unit's directives and acknowledging the directives addressed to its unit.

Each post holds a token for its unit (minted with the local key) and subscribes to the
``sa`` and ``directives`` streams (a staff watches its picture). The simulator's directives
are submitted by the post of their issuer, over the gateway's ``submit`` request, like any
console's: the gateway takes the issuer from the post's token, and the simulator itself
writes nothing to Kafka but SA (its principal has the sensor role). For every directive
whose target is its unit, a post answers ``WILCO`` after a short, random delay and
``HAVE_DO`` a little later, as a staff would. That gives every directive from the
simulator its whole lifecycle (submitted, decided, delivered, acknowledged), which
``c2bus trace`` and the dashboards show. A post that loses its link connects again after
a second; while a directive's issuer has no post connected, the simulator draws another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from c2bus.core.events import DirectiveEvent
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.core.protocol import COMMANDER_ROLE, SUBPROTOCOL, DirectiveBody, Submit

log = logging.getLogger(__name__)

Mint = Callable[[Identity], str]
RECONNECT_S = 1.0


#: The nation of the staff officer at a NATO headquarters' post (any member would do).
NATO_STAFF_NATION = "NLD"


def post_identity(unit: str, nation: str) -> Identity:
    """The staff console of ``unit``: cleared NATO SECRET, of the unit's nation (a member
    nation's officer at a NATO headquarters), a commander who may issue directives."""
    return Identity(
        subject=f"sim-post-{unit.lower()}",
        nation=NATO_STAFF_NATION if nation == "NATO" else nation,
        clearance=Classification.NATO_SECRET,
        unit=unit,
        roles=frozenset({COMMANDER_ROLE}),
    )


def submit_message(directive: DirectiveEvent, correlation: str) -> str:
    """The ``submit`` request that issues ``directive`` from its issuer's console (a text
    frame's JSON)."""
    data = directive.data
    body = DirectiveBody(
        kind=data.kind,
        target=data.target,
        expires=data.expires,
        valid_from=data.valid_from,
        area=data.area,
        text=data.text,
        parameters=data.parameters,
    )
    return msgspec.json.encode(
        Submit(
            directive=body,
            classification=directive.classification,
            releasableto=directive.releasableto,
            id=correlation,
            directive_id=directive.id,
        )
    ).decode()


class CommandPost:
    def __init__(
        self,
        url: str,
        identity: Identity,
        mint: Mint,
        rng: random.Random,
        *,
        wilco_after_s: tuple[float, float] = (0.2, 1.5),
        done_after_s: tuple[float, float] = (1.0, 4.0),
    ) -> None:
        self.url = url
        self.identity = identity
        self.mint = mint
        self.rng = rng
        self.wilco_after_s = wilco_after_s
        self.done_after_s = done_after_s
        self.acknowledged = 0
        #: directives the gateway took from this post (``submitted`` frames)
        self.submitted = 0
        self._answered: set[str] = set()
        self._seq = 0
        self._ws: ClientConnection | None = None

    async def submit(self, directive: DirectiveEvent) -> bool:
        """Issue ``directive`` (its issuer is this post's unit); False if not connected."""
        ws = self._ws
        if ws is None:
            return False
        self._seq += 1
        try:
            await ws.send(submit_message(directive, f"d{self._seq}"))
        except WebSocketException:
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with connect(
                    self.url,
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers={"Authorization": f"Bearer {self.mint(self.identity)}"},
                    open_timeout=5,
                ) as ws:
                    await self._session(ws, stop)
            except (OSError, WebSocketException, TimeoutError) as exc:
                log.info(
                    "post.disconnected", extra={"unit": self.identity.unit, "error": repr(exc)}
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONNECT_S):
                    await stop.wait()

    async def _session(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        subscription = {"op": "subscribe", "id": "s", "streams": ["sa", "directives"]}
        await ws.send(orjson.dumps(subscription).decode())
        async with asyncio.TaskGroup() as tasks:
            closer = tasks.create_task(self._close_on(stop, ws))
            self._ws = ws
            try:
                async for raw in ws:
                    message = orjson.loads(raw)
                    op = message.get("op")
                    if op == "event" and message["stream"] == "directives":
                        self._on_directive(message["event"], ws, tasks)
                    elif op == "submitted":
                        self.submitted += 1
                    elif op == "error":
                        log.info("post.refused", extra={"unit": self.identity.unit, **message})
            finally:
                self._ws = None
                closer.cancel()

    @staticmethod
    async def _close_on(stop: asyncio.Event, ws: ClientConnection) -> None:
        await stop.wait()
        await ws.close()

    def _on_directive(
        self, event: dict[str, Any], ws: ClientConnection, tasks: asyncio.TaskGroup
    ) -> None:
        data = event.get("data") or {}
        directive_id = event.get("id")
        if data.get("target") != self.identity.unit or not isinstance(directive_id, str):
            return
        if directive_id in self._answered:
            return  # sent again after a reconnect: answered already
        self._answered.add(directive_id)
        tasks.create_task(self._answer(ws, directive_id))

    async def _answer(self, ws: ClientConnection, directive_id: str) -> None:
        with contextlib.suppress(WebSocketException):
            await asyncio.sleep(self.rng.uniform(*self.wilco_after_s))
            await self._ack(ws, directive_id, "WILCO")
            await asyncio.sleep(self.rng.uniform(*self.done_after_s))
            await self._ack(ws, directive_id, "HAVE_DO")
            self.acknowledged += 1

    async def _ack(self, ws: ClientConnection, directive_id: str, state: str) -> None:
        self._seq += 1
        message = {"op": "ack", "id": f"a{self._seq}", "directive_id": directive_id, "state": state}
        await ws.send(orjson.dumps(message).decode())


class CommandPosts:
    """A post per unit (``units``: unit → nation) on the gateway at ``url``."""

    def __init__(self, url: str, units: dict[str, str], mint: Mint, rng: random.Random) -> None:
        self.posts = {
            unit: CommandPost(url, post_identity(unit, nation), mint, rng)
            for unit, nation in sorted(units.items())
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Keep every post connected until ``stop``."""
        async with asyncio.TaskGroup() as tasks:
            for post in self.posts.values():
                tasks.create_task(post.run(stop))

    async def submit(self, directive: DirectiveEvent) -> bool:
        """Issue ``directive`` from the post of its issuer; False if that post is not
        connected (or the policy names a unit that has none)."""
        post = self.posts.get(directive.data.issuer)
        return post is not None and await post.submit(directive)

    @property
    def submitted(self) -> int:
        """Directives the gateway has taken from the posts."""
        return sum(p.submitted for p in self.posts.values())

    @property
    def acknowledged(self) -> int:
        """Directives carried out (HAVE_DO sent)."""
        return sum(p.acknowledged for p in self.posts.values())
