"""``c2bus audit verify`` on real Kafka: the decisions of a real enforcer verify; one decision
rewritten on the topic by the admin principal (verdict flipped, the enforcer's signature
kept) is named alone, by partition and offset, and the command exits non-zero, though the
enforcer decided on after it, across a restart that read the forged record at the tail.
A decisions topic written again by the admin without its last decisions is named by the
enforcer's signed checkpoints."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from c2bus.adapters.kafka import admin_client, client_options
from c2bus.adapters.topics import TopicNames, create_topics
from c2bus.core.audit import digest
from c2bus.core.codec import decode_event, encode_event
from c2bus.core.events import ChainLink, CheckpointEvent, DecisionEvent, Verdict
from c2bus.errors import TopicError
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
    # the decision was signed in a record tree: the altered value leads to another root
    assert bad[0].startswith(where + "signature: bad signature by key"), out
    first_bad = f"{topics.decisions} partition {written.partition} offset {written.offset}"
    assert f"the first: {first_bad}" in err

    code, out, _ = await c2bus(capsys, "audit", "verify", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["records"] == len(after)
    assert [(b["partition"], b["offset"]) for b in report["bad"]] == [
        (written.partition, written.offset)
    ]


async def test_decisions_removed_from_a_partitions_end_are_named_by_its_checkpoint(
    env: Env,
    topics: TopicNames,
    valid_example: Any,
    cli_env: None,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The admin deletes the decisions topic and writes back every record but the last two
    of one partition: each chain left holds, so only the checkpoint shows the loss."""
    monkeypatch.setenv("C2BUS_TRUST_FILE", str(env.signing.trust_file))
    sent = [directive(valid_example, f"d-{t}-{n}", t) for n in range(3) for t in TARGETS]
    async with enforcer(env, C2BUS_ENFORCER_CHECKPOINT_INTERVAL_S="1"):
        await produce(env.kafka, topics.submitted, *sent)
        records = await decided(env, topics, len(sent))
        tails = {r.partition: link_of(r).seq for r in records}  # the newest seq of each
        async with asyncio.timeout(30):  # a checkpoint of each tail (at most 1 s after it)
            while True:
                vouched = {}
                for r in await read_all(env.kafka, topics.checkpoints):
                    checkpoint = decode_event(r.value)
                    assert isinstance(checkpoint, CheckpointEvent)
                    data = checkpoint.data
                    vouched[data.partition] = max(vouched.get(data.partition, -1), data.seq)
                if vouched == tails:
                    break
                await asyncio.sleep(0.3)
    code, out, err = await c2bus(capsys, "audit", "verify")
    assert code == 0, out + err
    assert "checkpointed at seq" in out

    victim = max(tails, key=lambda p: tails[p])
    assert tails[victim] >= 2  # the partition keeps at least one decision
    kept = sorted(records, key=lambda r: (r.partition, r.offset))
    removed = [r for r in kept if r.partition == victim][-2:]
    kept = [r for r in kept if r not in removed]
    async with admin_client(env.kafka) as admin:
        await admin.delete_topics([topics.decisions])
    async with asyncio.timeout(60):  # the deletion completes a moment after it is accepted
        while True:
            try:
                await create_topics(env.kafka, env.prefix)
                break
            except TopicError:
                await asyncio.sleep(0.5)
    producer = AIOKafkaProducer(**client_options(env.kafka), acks="all")
    await producer.start()
    try:
        for r in kept:
            await producer.send_and_wait(
                topics.decisions,
                r.value,
                key=r.key,
                partition=r.partition,
                headers=list(r.headers),
            )
    finally:
        await producer.stop()

    code, out, err = await c2bus(capsys, "audit", "verify")
    assert code == 1, out + err
    bad = [line for line in out.splitlines() if line.startswith("BAD")]
    end = sum(1 for r in kept if r.partition == victim)  # where the removed ones were
    assert len(bad) == 1, out
    assert bad[0].startswith(
        f"BAD partition {victim} offset {end}: records removed from the end: the checkpoint at "
    ), out
    assert bad[0].endswith(
        f"vouches for seq {tails[victim]}, the partition ends at seq {tails[victim] - 2}"
    ), out
