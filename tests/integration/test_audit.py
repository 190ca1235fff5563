"""``c2bus audit verify`` on real Kafka: the decisions of a real enforcer verify; one decision
rewritten on the topic by the admin principal (verdict flipped, the enforcer's signature
kept) is named alone, by partition and offset, and the command exits non-zero, though the
enforcer decided on after it, across a restart that read the forged record at the tail."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from c2bus.adapters.kafka import client_options
from c2bus.adapters.topics import TopicNames
from c2bus.core.audit import digest
from c2bus.core.codec import decode_event, encode_event
from c2bus.core.events import ChainLink, DecisionEvent, Verdict
from tests.integration.services import Env, enforcer
from tests.integration.test_pipeline import produce
from tests.integration.test_roundtrip import read_all
from tests.integration.test_trace import c2bus, cli_env  # noqa: F401 (a fixture)

TARGETS = ("POL-12BDE", "DEU-41BDE", "NLD-43BDE")


def directive(valid_example: Any, directive_id: str, target: str) -> tuple[bytes, bytes]:
    doc = valid_example("directive")
    doc["id"] = directive_id
    doc["time"] = datetime.now(UTC).isoformat()
    doc["data"].update(
        issuer="MNC-NE", target=target, expires=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    doc["data"].pop("valid_from", None)
    return target.encode(), json.dumps(doc).encode()


async def decided(env: Env, topics: TopicNames, count: int) -> list[Any]:
    """The decisions topic once it holds ``count`` records."""
    async with asyncio.timeout(40):
        while True:
            found = await read_all(env.kafka, topics.decisions)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.3)


def link_of(record: Any) -> ChainLink:
    event = decode_event(record.value)
    assert isinstance(event, DecisionEvent) and event.data.chain is not None
    return event.data.chain


async def test_audit_verify_names_exactly_the_rewritten_decision(
    env: Env,
    topics: TopicNames,
    valid_example: Any,
    cli_env: None,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("C2BUS_TRUST_FILE", str(env.signing.trust_file))
    first = [directive(valid_example, f"d-{t}-{n}", t) for n in range(2) for t in TARGETS]
    async with enforcer(env):
        await produce(env.kafka, topics.submitted, *first)
        records = await decided(env, topics, len(first))

    code, out, err = await c2bus(capsys, "audit", "verify")
    assert code == 0, out + err
    assert f"{len(first)} records" in out and "verified" in out
    assert "BAD" not in out

    # The admin (a super user: the worst case) rewrites one decision: the verdict flipped,
    # the enforcer's signature headers kept, written into the same partition.
    genuine = next(r for r in records if decode_event(r.value).data.target == TARGETS[0])
    event = decode_event(genuine.value)
    assert isinstance(event, DecisionEvent)
    flipped = Verdict.ALLOW if event.data.verdict is not Verdict.ALLOW else Verdict.DENY
    forged = encode_event(
        msgspec.structs.replace(event, data=msgspec.structs.replace(event.data, verdict=flipped))
    )
    producer = AIOKafkaProducer(**client_options(env.kafka), acks="all")
    await producer.start()
    try:
        written = await producer.send_and_wait(
            topics.decisions,
            forged,
            key=genuine.key,
            partition=genuine.partition,
            headers=list(genuine.headers),
        )
    finally:
        await producer.stop()

    # A new enforcer sets its lanes up with the forged record at the tail, and decides on.
    later = [directive(valid_example, f"d-later-{n}", TARGETS[0]) for n in range(2)]
    async with enforcer(env, publish_policy=False):
        await produce(env.kafka, topics.submitted, *later)
        after = await decided(env, topics, len(first) + 1 + len(later))
    part = sorted((r for r in after if r.partition == genuine.partition), key=lambda r: r.offset)
    last_genuine, forgery, *new = part[-4:]
    assert forgery.offset == written.offset
    # the chain went on from the last genuine record, not from the forgery
    assert link_of(new[0]).prev == digest(last_genuine.value)
    assert [link_of(r).seq for r in new] == [link_of(last_genuine).seq + n for n in (1, 2)]

    code, out, err = await c2bus(capsys, "audit", "verify")
    assert code == 1, out + err
    bad = [line for line in out.splitlines() if line.startswith("BAD")]
    assert len(bad) == 1, out
    where = f"BAD partition {written.partition} offset {written.offset}: "
    assert bad[0].startswith(where + "signature: bad signature by key"), out
    assert f"the first: partition {written.partition} offset {written.offset}" in err

    code, out, _ = await c2bus(capsys, "audit", "verify", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["records"] == len(after)
    assert [(b["partition"], b["offset"]) for b in report["bad"]] == [
        (written.partition, written.offset)
    ]
