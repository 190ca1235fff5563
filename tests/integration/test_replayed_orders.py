"""R9: an order is carried out once. A signed approved directive written to Kafka again
(the same bytes, later) and a stale one (signed by the enforcer's key, but expired or decided
before the gateway's replay horizon) are never delivered; a directive submitted again is
denied as a replay. All of it holds after every service restarted, when nothing is left of
what they remembered but what they read back from Kafka."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from c2bus.adapters.dlq import PREFIX
from c2bus.adapters.kafka import client_options
from c2bus.adapters.signing import APPROVED
from c2bus.adapters.topics import TopicNames
from c2bus.core.cloudevents import KAFKA_HEADERS
from c2bus.core.codec import decode_event, encode_event
from c2bus.core.events import DirectiveEvent
from tests.integration.services import Console, Env, enforcer, event_id, gateway
from tests.integration.test_held import decisions_for
from tests.integration.test_roundtrip import read_all

BODY = {
    "kind": "MOVE",
    "target": "POL-12BDE",
    "area": [{"lat": 52.0, "lon": 5.0}, {"lat": 52.0, "lon": 6.0}, {"lat": 52.5, "lon": 5.5}],
    "text": "Move to assembly area BRAVO.",
}


async def rewrite(env: Env, topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> str:
    """Write a record as the admin (the worst case of a stolen credential); its position."""
    producer = AIOKafkaProducer(**client_options(env.kafka), acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, value, key=b"POL-12BDE", headers=headers)
    finally:
        await producer.stop()
    return f"{topic}/{sent.partition}/{sent.offset}"


def resigned(env: Env, release: DirectiveEvent, **changes: Any) -> tuple[bytes, list[Any]]:
    """The release changed and signed again with the enforcer's own key: what an attacker
    holding an old genuine record amounts to, at its worst."""
    value = encode_event(msgspec.structs.replace(release, **changes))
    signer = env.signing.signer("enforcer")
    return value, [*KAFKA_HEADERS, *signer.headers(APPROVED, value)]


async def test_a_replayed_or_stale_order_is_never_delivered_also_after_restarts(
    env: Env, topics: TopicNames
) -> None:
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    issuer_token = env.token(unit="MNC-NE", roles=("console", "commander"))
    target_token = env.token(unit="POL-12BDE", nation="POL")
    copies: list[str] = []
    async with (
        enforcer(env),
        gateway(env) as gw,
        Console.connect(gw.port, issuer_token) as issuer,
        Console.connect(gw.port, target_token) as target,
    ):
        directive_id = await issuer.submit({**BODY, "expires": expires})
        await target.events_until(
            lambda f: f["stream"] == "directives" and event_id(f) == directive_id
        )
        [original] = await read_all(env.kafka, topics.approved)
        [submitted] = await read_all(env.kafka, topics.submitted)
        release = decode_event(original.value)
        assert isinstance(release, DirectiveEvent) and release.decidedat is not None
        headers = list(original.headers)
        copies.append(await rewrite(env, topics.approved, original.value, headers))
        old = release.decidedat - timedelta(hours=2)  # before the gateway's 1 h horizon
        copies.append(await rewrite(env, topics.approved, *resigned(env, release, decidedat=old)))
        gone = msgspec.structs.replace(
            release.data, expires=datetime.now(UTC) - timedelta(minutes=1)
        )
        copies.append(await rewrite(env, topics.approved, *resigned(env, release, data=gone)))
        await rewrite(env, topics.submitted, submitted.value, list(submitted.headers or []))
        replayed = await decisions_for(env, topics, directive_id, 2)
        assert replayed[1].data.verdict.value == "DENY"
        assert [r.rule for r in replayed[1].data.reasons] == ["validity.replay"]
        await target.drain(1.0)
        frames = target.frames + target.states

    # Every service starts again; the same copies are written once more.
    async with (
        enforcer(env, publish_policy=False),
        gateway(env) as gw,
        Console.connect(gw.port, target_token) as target,
    ):
        copies.append(await rewrite(env, topics.approved, original.value, headers))
        await rewrite(env, topics.submitted, submitted.value, list(submitted.headers or []))
        again = await decisions_for(env, topics, directive_id, 3)
        assert again[2].data.verdict.value == "DENY"
        assert [r.rule for r in again[2].data.reasons] == ["validity.replay"]
        await target.drain(1.0)
        frames += target.frames + target.states
        letters = []
        async with asyncio.timeout(20):
            while len(letters) < 6:
                letters = await read_all(env.kafka, topics.dlq)
                await asyncio.sleep(0.2)

    delivered = [f["pos"] for f in frames if f["stream"] == "directives"]
    assert not set(copies) & set(delivered), (copies, delivered)
    assert f"{topics.approved}/{original.partition}/{original.offset}" in delivered
    approved = await read_all(env.kafka, topics.approved)
    assert len(approved) == 5  # the release and the four copies: no new release either

    reasons: dict[str, list[str]] = {}
    for letter in letters:
        fields = {k: v.decode() for k, v in letter.headers}
        assert fields[PREFIX + "stage"] == "gateway.decode"
        assert fields[PREFIX + "exception.class.name"] == "UnverifiedRecord"
        where = (
            f"{fields[PREFIX + 'topic']}/{fields[PREFIX + 'partition']}/{fields[PREFIX + 'offset']}"
        )
        reasons.setdefault(where, []).append(fields[PREFIX + "exception.message"])
    # each copy dead-lettered by the gateway that read it live, and (after the restart) the
    # earlier copies read back over the horizon once more
    assert reasons[copies[0]][0].startswith(f"replay: directive {directive_id} was released at")
    assert reasons[copies[1]][0].startswith("stale: decided at")
    assert reasons[copies[2]][0].startswith("stale: expired at")
    assert reasons[copies[3]] == [
        f"replay: directive {directive_id} was released at "
        f"{topics.approved}/{original.partition}/{original.offset}"
    ]
    assert json.loads(original.value)["decidedat"]
