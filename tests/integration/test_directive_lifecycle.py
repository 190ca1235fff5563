"""A directive's lifecycle through real gateways and a real broker: steps out of order are
refused with ``illegal_transition`` and the reason, the first answer stands, a gateway
started later knows the state from the status topic, and a directive whose validity ends
unanswered is EXPIRED on the issuer's status stream."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.services import (
    Console,
    Env,
    enforcer,
    event_id,
    gateway,
    lifecycle,
    publish_reference_policy,
)

TARGET = "POL-12BDE"


def order(expires_in: timedelta) -> dict[str, Any]:
    return {
        "kind": "MOVE",
        "target": TARGET,
        "expires": (datetime.now(UTC) + expires_in).isoformat(),
        "area": [{"lat": 52.0, "lon": 5.0}, {"lat": 52.0, "lon": 6.0}, {"lat": 52.5, "lon": 5.5}],
        "text": "Move to assembly area BRAVO.",
    }


async def ack(console: Console, directive_id: str, state: str, n: int) -> dict[str, Any]:
    message = {"op": "ack", "id": f"ack-{n}", "directive_id": directive_id, "state": state}
    if state == "CANTCO":
        message["reason"] = "bridge down"
    await console.ws.send(json.dumps(message))
    return await console.reply_to(f"ack-{n}", ("acked", "error"))


def issuer_token(env: Env) -> str:
    return env.token(unit="MNC-NE", roles=("console", "commander"))


async def test_steps_out_of_order_are_refused_and_the_first_answer_stands(env: Env) -> None:
    await publish_reference_policy(env)
    async with enforcer(env):
        async with (
            gateway(env) as gw,
            Console.connect(gw.port, issuer_token(env)) as issuer,
            Console.connect(gw.port, env.token(unit=TARGET, nation="POL")) as target,
        ):
            directive_id = await issuer.submit(order(timedelta(hours=2)))
            await target.events_until(
                lambda f: f["stream"] == "directives" and event_id(f) == directive_id
            )
            early = await ack(target, directive_id, "HAVE_DO", 1)
            assert early["op"] == "error" and early["code"] == "illegal_transition", early
            assert early["message"].endswith("HAVE_DO follows WILCO only")
            assert (await ack(target, directive_id, "WILCO", 2))["op"] == "acked"
            # at once, before the WILCO is read back: the gateway's own step counts
            refused = [
                await ack(target, directive_id, s, n) for n, s in ((3, "WILCO"), (4, "CANTCO"))
            ]
            for reply in refused:
                assert reply["code"] == "illegal_transition", reply
                assert reply["message"].endswith("the directive was answered WILCO already")
            assert (await ack(target, directive_id, "HAVE_DO", 5))["op"] == "acked"
            await issuer.events_until(lifecycle(directive_id, "HAVE_DO"))
            states = [
                f["event"]["data"]["state"]
                for f in issuer.frames
                if f["stream"] == "status" and f["event"]["data"]["directive_id"] == directive_id
            ]
            assert [s for s in states if s not in ("DECIDED", "DELIVERED")] == ["WILCO", "HAVE_DO"]

        # a gateway started afterwards reads the steps back: the directive is done
        async with (
            gateway(env) as gw,
            Console.connect(gw.port, env.token(unit=TARGET, nation="POL")) as target,
        ):
            again = await ack(target, directive_id, "WILCO", 6)
            assert again["code"] == "illegal_transition", again
            assert again["message"].endswith("the directive is HAVE_DO already")


async def test_a_directive_whose_validity_ends_unanswered_is_expired(env: Env) -> None:
    await publish_reference_policy(env)
    async with (
        enforcer(env),
        gateway(env) as gw,
        Console.connect(gw.port, issuer_token(env)) as issuer,
        Console.connect(gw.port, env.token(unit=TARGET, nation="POL")) as target,
    ):
        answered = await issuer.submit(order(timedelta(seconds=6)), "sub-1")
        silent = await issuer.submit(order(timedelta(seconds=6)), "sub-2")
        for directive_id in (answered, silent):
            await target.events_until(
                lambda f, d=directive_id: f["stream"] == "directives" and event_id(f) == d
            )
        assert (await ack(target, answered, "CANTCO", 1))["op"] == "acked"
        frames = await issuer.events_until(lifecycle(silent, "EXPIRED"), timeout_s=30)
        [expired] = [f for f in frames if lifecycle(silent, "EXPIRED")(f)]
        data = expired["event"]["data"]
        assert data["actor"].startswith("gateway:") and data["reason"].startswith(
            "its validity ended at"
        )
        late = await ack(target, silent, "WILCO", 2)
        assert late["code"] == "illegal_transition", late
        assert late["message"].endswith("the directive is EXPIRED already"), late
        # the refused one (which expired first) does not expire: CANTCO is final
        await asyncio.sleep(2)  # two sweeps
        assert not [f for f in issuer.frames if lifecycle(answered, "EXPIRED")(f)]
