"""Policy versions over the compacted policy topic: the enforcer fails closed without one,
switches to a new version without a restart, and ignores versions that are invalid or
built on a stale base."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import msgspec
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from c2bus.adapters.kafka import client_options
from c2bus.adapters.policy_store import PolicyConflict, latest_versions, policy_event, publish
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import decode_event, encode_event
from c2bus.core.events import DecisionEvent
from c2bus.core.policy.compiler import PolicyInvalid, load_policy_document
from c2bus.core.policy.model import PolicyDocument
from c2bus.services.enforcer.app import Enforcer
from tests.integration.services import REFERENCE_POLICY, Env, eventually
from tests.integration.test_pipeline import directive, produce
from tests.integration.test_roundtrip import read_all


def reference(**changes: Any) -> PolicyDocument:
    doc = yaml.safe_load(REFERENCE_POLICY.read_text())
    doc.update(changes)
    return load_policy_document(yaml.safe_dump(doc).encode())


async def decisions(env: Env, topics: TopicNames, count: int) -> dict[str, DecisionEvent]:
    found: dict[str, DecisionEvent] = {}
    async with asyncio.timeout(30):
        while len(found) < count:
            for record in await read_all(env.kafka, topics.decisions):
                event = decode_event(record.value)
                assert isinstance(event, DecisionEvent)
                found[event.data.directive_id] = event
            await asyncio.sleep(0.3)
    return found


async def test_fail_closed_then_switch_versions_without_restart(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    service = Enforcer(env.settings("enforcer"))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await produce(
            env.kafka,
            topics.submitted,
            (b"POL-12BDE", directive(valid_example, "d-early", "MNC-NE", "POL-12BDE")),
        )
        await asyncio.sleep(3)
        assert not service.ready  # no policy: nothing is decided
        assert await read_all(env.kafka, topics.decisions) == []

        v1 = reference()
        await publish(env.kafka, topics.policy, v1, None, "urn:test")
        first = await decisions(env, topics, 1)
        assert first["d-early"].data.verdict.value == "ALLOW"
        assert first["d-early"].data.policy_version == 1

        # Version 2 ends Poland's transfer: the same kind of directive is now denied.
        v1_doc = yaml.safe_load(REFERENCE_POLICY.read_text())
        transfers = [t for t in v1_doc["transfers"] if t["id"] != "toa-pol-12"]
        v2 = reference(version=2, transfers=transfers)
        await publish(env.kafka, topics.policy, v2, 1, "urn:test")
        await eventually(lambda: service.policies.current_version == 2)
        await produce(
            env.kafka,
            topics.submitted,
            (b"POL-12BDE", directive(valid_example, "d-after-v2", "MNC-NE", "POL-12BDE")),
        )
        second = await decisions(env, topics, 2)
        assert second["d-after-v2"].data.verdict.value == "DENY"
        assert second["d-after-v2"].data.policy_version == 2
        assert second["d-after-v2"].data.reasons[0].rule == "authority.none"

        # An invalid version 3 and a version on a stale base are refused; v2 stays.
        broken = copy.deepcopy(v1_doc)
        broken["version"] = 3
        broken["units"][5]["parent"] = "NO-SUCH-HQ"
        raw_broken = msgspec.structs.replace(
            policy_event(v1, 2, "urn:rogue"),
            id="policy:alliance-main:v3",
            data=msgspec.structs.replace(
                policy_event(v1, 2, "urn:rogue").data,
                version=3,
                document=msgspec.convert(broken, PolicyDocument, strict=False),
            ),
        )
        stale = policy_event(reference(version=4), 1, "urn:rogue")
        producer = AIOKafkaProducer(**client_options(env.kafka), acks="all")
        await producer.start()
        try:
            for event in (raw_broken, stale):
                await producer.send_and_wait(
                    topics.policy, encode_event(event), key=b"alliance-main"
                )
        finally:
            await producer.stop()
        rejected = service.policies.rejected
        await eventually(
            lambda: (
                rejected.labels("invalid")._value.get() >= 1
                and rejected.labels("stale-base")._value.get() >= 1
            )
        )
        assert service.policies.current_version == 2
        await produce(
            env.kafka,
            topics.submitted,
            (b"POL-12BDE", directive(valid_example, "d-after-bad", "MNC-NE", "POL-12BDE")),
        )
        third = await decisions(env, topics, 3)
        assert third["d-after-bad"].data.policy_version == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_publisher_refuses_invalid_and_stale_versions(env: Env, topics: TopicNames) -> None:
    await publish(env.kafka, topics.policy, reference(), None, "urn:test")
    with pytest.raises(PolicyConflict, match="stale base version None"):
        await publish(env.kafka, topics.policy, reference(version=2), None, "urn:test")
    with pytest.raises(PolicyConflict, match="not newer"):
        await publish(env.kafka, topics.policy, reference(version=1), 1, "urn:test")
    doc = yaml.safe_load(REFERENCE_POLICY.read_text())
    doc["version"] = 2
    doc["units"][5]["parent"] = "NO-SUCH-HQ"
    invalid = msgspec.convert(doc, PolicyDocument, strict=False)
    with pytest.raises(PolicyInvalid, match="unknown unit NO-SUCH-HQ"):
        await publish(env.kafka, topics.policy, invalid, 1, "urn:test")
    latest = await latest_versions(env.kafka, topics.policy)
    assert latest["alliance-main"].data.version == 1  # nothing else was published
