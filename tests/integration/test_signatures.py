"""Only what its writer signed reaches a console: an approved directive, a decision or a
lifecycle step written straight to Kafka (unsigned, signed by an unknown key or by a key
trusted for something else, or altered after signing) is dead-lettered with the reason,
counted, and never delivered; the genuine ones, signed by the enforcer or a gateway, are."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from c2bus.adapters.kafka import client_options
from c2bus.adapters.signing import APPROVED, DECISIONS, STATUS, Signer
from c2bus.adapters.topics import TopicNames
from c2bus.core.cloudevents import KAFKA_HEADERS
from tests.integration.services import Console, Env, enforcer, event_id, gateway, lifecycle
from tests.integration.test_gateway import get
from tests.integration.test_held import records_eventually
from tests.integration.test_roundtrip import read_all

PREFIX = "__connect.errors."


def forged_directive(valid_example: Any, directive_id: str) -> bytes:
    """An approved directive to POL-12BDE as the enforcer would write it, decision id and
    all, that no enforcer decided."""
    doc = copy.deepcopy(valid_example("directive"))
    doc["id"] = directive_id
    doc["time"] = datetime.now(UTC).isoformat()
    doc["decisionid"] = f"decision:{directive_id}"
    doc["decidedat"] = doc["time"]
    doc["data"].update(issuer="MNC-NE", target="POL-12BDE")
    doc["data"]["expires"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    doc["data"].pop("valid_from", None)
    return json.dumps(doc).encode()


async def write(env: Env, topic: str, records: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
    """Write ``records`` (value, headers) keyed by the target, as the admin (who may write
    anywhere: the worst case of a stolen credential)."""
    producer = AIOKafkaProducer(**client_options(env.kafka), acks="all")
    await producer.start()
    try:
        for value, headers in records:
            await producer.send_and_wait(topic, value, key=b"POL-12BDE", headers=headers)
    finally:
        await producer.stop()


async def test_the_gateway_delivers_only_what_the_enforcer_signed(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    stranger = Signer(Ed25519PrivateKey.generate())  # a key no trust store names
    ingest = env.signing.signer("ingest")  # trusted, but for approvals only
    genuine = env.signing.signer("enforcer")
    unsigned = forged_directive(valid_example, "d-unsigned")
    by_stranger = forged_directive(valid_example, "d-stranger")
    by_ingest = forged_directive(valid_example, "d-by-ingest")
    tampered = forged_directive(valid_example, "d-tampered")
    headers = list(KAFKA_HEADERS)
    forged = [
        (unsigned, headers),
        (by_stranger, headers + stranger.headers(APPROVED, by_stranger)),
        (by_ingest, headers + ingest.headers(APPROVED, by_ingest)),
        # signed by the enforcer's key, then its target changed
        (tampered.replace(b"MNC-NE", b"SHAPE"), headers + genuine.headers(APPROVED, tampered)),
        # a decision signed as an approved directive: the family is part of what is signed
        (forged_directive(valid_example, "d-family"), []),
    ]
    family = forged[-1][0]
    forged[-1] = (family, headers + genuine.headers(DECISIONS, family))
    body = {
        "kind": "MOVE",
        "target": "POL-12BDE",
        "expires": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "area": [{"lat": 52.0, "lon": 5.0}, {"lat": 52.0, "lon": 6.0}, {"lat": 52.5, "lon": 5.5}],
        "text": "Move to assembly area BRAVO.",
    }
    async with (
        enforcer(env),
        gateway(env) as gw,
        Console.connect(
            gw.port, env.token(unit="MNC-NE", roles=("console", "commander"))
        ) as issuer,
        Console.connect(gw.port, env.token(unit="POL-12BDE", nation="POL")) as target,
    ):
        await write(env, topics.approved, forged)
        await write(env, topics.decisions, [(unsigned, headers)])  # not even a decision
        directive_id = await issuer.submit(body)  # decided and signed by the enforcer
        await target.events_until(
            lambda f: f["stream"] == "directives" and event_id(f) == directive_id
        )
        await issuer.events_until(
            lambda f: (
                f["stream"] == "decisions" and f["event"]["data"]["directive_id"] == directive_id
            )
        )
        await target.drain()
        delivered = {event_id(f) for f in target.frames + issuer.frames}
        assert not {"d-unsigned", "d-stranger", "d-by-ingest", "d-tampered", "d-family"} & (
            delivered
        ), delivered
        letters = await records_eventually(env, topics.dlq)
        async with asyncio.timeout(20):
            while len(letters) < 6:
                letters = await read_all(env.kafka, topics.dlq)
        _, metrics = await asyncio.to_thread(get, f"http://127.0.0.1:{gw.ops.port}/metrics")

    reasons = {}
    for letter in letters:
        fields = {k: v.decode() for k, v in letter.headers}
        assert fields[PREFIX + "stage"] == "gateway.decode"
        assert fields[PREFIX + "exception.class.name"] == "UnverifiedRecord"
        reasons[json.loads(letter.value)["id"], fields[PREFIX + "topic"]] = fields[
            PREFIX + "exception.message"
        ]
    assert reasons.pop(("d-unsigned", topics.decisions)).startswith("unsigned")
    assert reasons[("d-unsigned", topics.approved)].startswith("unsigned")
    assert reasons[("d-stranger", topics.approved)].startswith("unknown signing key")
    assert "not trusted to sign directives.approved" in reasons[("d-by-ingest", topics.approved)]
    assert reasons[("d-tampered", topics.approved)].startswith("bad signature")
    assert reasons[("d-family", topics.approved)].startswith("bad signature")
    assert len(reasons) == 5
    line = 'c2bus_dead_letters_total{reason="UnverifiedRecord",stage="gateway.decode"} 6.0'
    assert line in metrics


async def test_a_lifecycle_step_reaches_consoles_only_signed_by_a_gateway_or_the_enforcer(
    env: Env, topics: TopicNames
) -> None:
    """A CANTCO or HAVE_DO written straight to Kafka, unsigned, by an unknown key or by the
    ingest's key (trusted for approvals only), never reaches the issuer's console; the
    enforcer's DECIDED and the gateway's DELIVERED and WILCO do, each signed by its
    writer, and the forgeries are dead-lettered with the reason."""
    body = {
        "kind": "MOVE",
        "target": "POL-12BDE",
        "expires": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "area": [{"lat": 52.0, "lon": 5.0}, {"lat": 52.0, "lon": 6.0}, {"lat": 52.5, "lon": 5.5}],
        "text": "Move to assembly area BRAVO.",
    }
    stranger = Signer(Ed25519PrivateKey.generate())
    ingest = env.signing.signer("ingest")
    async with (
        enforcer(env),
        gateway(env) as gw,
        Console.connect(
            gw.port, env.token(unit="MNC-NE", roles=("console", "commander"))
        ) as issuer,
        Console.connect(gw.port, env.token(unit="POL-12BDE", nation="POL")) as target,
    ):
        directive_id = await issuer.submit(body)

        step = functools.partial(lifecycle, directive_id)

        await issuer.events_until(step("DELIVERED"))

        def forged(state: str) -> bytes:
            return json.dumps(
                {
                    "specversion": "1.0",
                    "id": f"forged-{state.lower()}",
                    "source": "urn:c2bus:gateway:forged",
                    "type": "c2bus.directive.status.v1",
                    "time": datetime.now(UTC).isoformat(),
                    "classification": "NATO SECRET",
                    "releasableto": "NATO",
                    "data": {
                        "directive_id": directive_id,
                        "state": state,
                        "actor": "POL-12BDE",
                        "issuer": "MNC-NE",
                        "target": "POL-12BDE",
                        **({"reason": "no fuel"} if state == "CANTCO" else {}),
                    },
                }
            ).encode()

        headers = list(KAFKA_HEADERS)
        cantco, have_do, by_ingest = forged("CANTCO"), forged("HAVE_DO"), forged("CANTCO")
        by_ingest = by_ingest.replace(b"forged-cantco", b"forged-by-ingest")
        await write(
            env,
            topics.status,
            [
                (cantco, headers),
                (have_do, headers + stranger.headers(STATUS, have_do)),
                (by_ingest, headers + ingest.headers(STATUS, by_ingest)),
            ],
        )
        await target.ws.send(
            json.dumps({"op": "ack", "id": "ack-1", "directive_id": directive_id, "state": "WILCO"})
        )
        assert (await target.reply_to("ack-1", ("acked", "error")))["op"] == "acked"
        await issuer.events_until(step("WILCO"))  # written after the forgeries
        await issuer.drain()
        states = [f["event"]["data"]["state"] for f in issuer.frames if f["stream"] == "status"]
        assert states == ["DECIDED", "DELIVERED", "WILCO"], states

    records = await read_all(env.kafka, topics.status)
    genuine = [r for r in records if not json.loads(r.value)["id"].startswith("forged")]
    assert len(genuine) == 3
    for record in genuine:  # each step signed by its writer's key, for status records
        writer = "enforcer" if json.loads(record.value)["data"]["state"] == "DECIDED" else "gateway"
        assert dict(record.headers)["c2bus_kid"].decode() == env.signing.signer(writer).kid
    letters = await records_eventually(env, topics.dlq)
    async with asyncio.timeout(20):
        while len(letters) < 3:
            letters = await read_all(env.kafka, topics.dlq)
    reasons = {
        json.loads(letter.value)["id"]: dict(letter.headers)[PREFIX + "exception.message"].decode()
        for letter in letters
    }
    assert reasons["forged-cantco"].startswith("unsigned")
    assert reasons["forged-have_do"].startswith("unknown signing key")
    assert "not trusted to sign directives.status" in reasons["forged-by-ingest"]
