"""The walking skeleton end to end on real Kafka with real WebSocket consoles: SA and
directives from plain Kafka producers, decided by the enforcer, fanned out by the gateway
to exactly the consoles entitled to them."""

from __future__ import annotations

import copy
import json
from typing import Any

from aiokafka import AIOKafkaProducer

from c2bus.adapters.kafka import client_options
from c2bus.adapters.settings import KafkaSettings
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import decode_event
from c2bus.core.events import DecisionEvent, DirectiveEvent
from c2bus.core.labels import Classification
from tests.integration.services import Console, Env, enforcer, event_id, gateway
from tests.integration.test_roundtrip import consume, read_all

Record = tuple[bytes, bytes] | tuple[bytes, bytes, list[tuple[str, bytes]]]


async def produce(kafka: KafkaSettings, topic: str, *records: Record) -> None:
    """Write ``records`` (key, value and, optionally, headers) and wait for each."""
    producer = AIOKafkaProducer(**client_options(kafka), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value, *headers in records:
            await producer.send_and_wait(
                topic, value, key=key, headers=headers[0] if headers else None
            )
    finally:
        await producer.stop()


def track(valid_example: Any, event_id: str, classification: str, releasable: str) -> bytes:
    doc = copy.deepcopy(valid_example("sa-track"))
    doc["id"] = event_id
    doc["classification"] = classification
    doc["releasableto"] = releasable
    return json.dumps(doc).encode()


def directive(valid_example: Any, directive_id: str, issuer: str, target: str) -> bytes:
    doc = copy.deepcopy(valid_example("directive"))
    doc["id"] = directive_id
    doc["data"]["issuer"] = issuer
    doc["data"]["target"] = target
    doc["data"]["expires"] = "2099-01-01T00:00:00Z"
    return json.dumps(doc).encode()


async def test_sa_reaches_only_consoles_cleared_and_released(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    async with (
        gateway(env) as gw,
        Console.connect(gw.port, env.token(nation="DEU"), ("sa",)) as cleared,
        Console.connect(gw.port, env.token(nation="AUS"), ("sa",)) as partner,
        Console.connect(
            gw.port, env.token(nation="DEU", clearance=Classification.NATO_RESTRICTED), ("sa",)
        ) as restricted,
    ):
        # Same key, so one partition: every console sees them in this order, and the
        # marker arriving proves the secret event before it was filtered, not late.
        await produce(
            env.kafka,
            topics.sa,
            (b"TRK-4711", track(valid_example, "secret-nato", "NATO SECRET", "NATO")),
            (b"TRK-4711", track(valid_example, "marker", "NATO UNCLASSIFIED", "NATO,AUS")),
        )
        for console in (cleared, partner, restricted):
            await console.events_until(lambda f: event_id(f) == "marker")
        assert [event_id(f) for f in cleared.frames] == ["secret-nato", "marker"]
        assert [event_id(f) for f in partner.frames] == ["marker"]  # AUS is not in NATO
        assert [event_id(f) for f in restricted.frames] == ["marker"]  # clearance too low
        frame = cleared.frames[0]
        assert frame["stream"] == "sa"
        assert frame["pos"].startswith(f"{topics.sa}/")
        assert frame["event"]["data"]["track_id"] == "TRK-4711"


STREAMS = ("sa", "directives", "decisions")  # the lifecycle has a test of its own


async def test_allowed_directive_reaches_its_target_denied_one_reaches_nobody(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    async with (
        enforcer(env),
        gateway(env) as gw,
        Console.connect(gw.port, env.token(unit="POL-12BDE", nation="POL"), STREAMS) as target,
        Console.connect(gw.port, env.token(unit="MNC-NE"), STREAMS) as issuer,
        Console.connect(
            gw.port, env.token(unit="JFC-NAPLES", nation="ITA"), STREAMS
        ) as denied_issuer,
        Console.connect(gw.port, env.token(unit="ITA-ARIETE", nation="ITA"), STREAMS) as bystander,
    ):
        await produce(
            env.kafka,
            topics.submitted,
            (b"POL-12BDE", directive(valid_example, "d-denied", "JFC-NAPLES", "POL-12BDE")),
            (b"POL-12BDE", directive(valid_example, "d-allowed", "MNC-NE", "POL-12BDE")),
        )
        await target.events_until(lambda f: event_id(f) == "d-allowed")
        await denied_issuer.events_until(lambda f: f["stream"] == "decisions")
        await issuer.events_until(lambda f: f["stream"] == "decisions")

        # The target's console got the allowed directive, naming the decision, and nothing
        # else (the denied one was submitted first on the same partition).
        assert [(f["stream"], event_id(f)) for f in target.frames] == [("directives", "d-allowed")]
        assert target.frames[0]["event"]["decisionid"] == "decision:d-allowed"
        # Each issuer sees its own verdict; the denied directive reached no console.
        [denial] = [f["event"] for f in denied_issuer.frames if f["stream"] == "decisions"]
        assert denial["data"]["verdict"] == "DENY"
        assert denial["data"]["reasons"][0]["rule"] == "authority.none"
        assert all(event_id(f) != "d-denied" for f in issuer.frames + target.frames)
        assert bystander.frames == []

    decisions = await consume(env.kafka, topics.decisions, 2, f"{env.prefix}-audit")
    by_directive = {}
    for record in decisions:
        event = decode_event(record.value)
        assert isinstance(event, DecisionEvent)
        by_directive[event.data.directive_id] = event
    assert by_directive["d-allowed"].data.verdict.value == "ALLOW"
    denied = by_directive["d-denied"]
    assert denied.data.verdict.value == "DENY"
    assert "JFC-NAPLES holds no command relationship over POL-12BDE" in (
        denied.data.reasons[0].message
    )
    assert denied.data.policy_set_id == "alliance-main"
    assert denied.data.policy_hash.startswith("sha256:")

    approved = await read_all(env.kafka, topics.approved)
    assert len(approved) == 1  # exactly the allowed one
    released = decode_event(approved[0].value)
    assert isinstance(released, DirectiveEvent)
    assert released.id == "d-allowed"
    # Every event the enforcer wrote says it is a CloudEvent in structured mode (the Kafka
    # protocol binding); the held-state records, which are not events, do not.
    status = await read_all(env.kafka, topics.status)
    for record in [*decisions, *approved, *status]:
        assert dict(record.headers).get("content-type") == b"application/cloudevents+json"
    held = await read_all(env.kafka, topics.held)
    assert held and all(not record.headers for record in held)
