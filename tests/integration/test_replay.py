"""A directive submitted again with the same id is denied as a replay, also after a restart,
and never released twice."""

from __future__ import annotations

import asyncio
from typing import Any

from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import decode_event
from c2bus.core.events import DecisionEvent
from tests.integration.services import Env, enforcer
from tests.integration.test_pipeline import directive, produce
from tests.integration.test_roundtrip import read_all


async def decisions(env: Env, topics: TopicNames, count: int) -> list[DecisionEvent]:
    async with asyncio.timeout(40):
        while True:
            found = [decode_event(r.value) for r in await read_all(env.kafka, topics.decisions)]
            if len(found) >= count:
                assert all(isinstance(d, DecisionEvent) for d in found)
                return found  # type: ignore[return-value]
            await asyncio.sleep(0.3)


async def test_replays_are_denied_across_a_restart(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    original = directive(valid_example, "d-once", "MNC-NE", "POL-12BDE")
    async with enforcer(env):
        await produce(env.kafka, topics.submitted, (b"POL-12BDE", original))
        await produce(env.kafka, topics.submitted, (b"POL-12BDE", original))
        first, replay = await decisions(env, topics, 2)
        assert (first.id, first.data.verdict.value) == ("decision:d-once", "ALLOW")
        assert replay.data.verdict.value == "DENY"
        assert replay.id.startswith("decision:d-once:replay:")
        assert [r.rule for r in replay.data.reasons] == ["validity.replay"]

    async with enforcer(env, publish_policy=False):
        await produce(env.kafka, topics.submitted, (b"POL-12BDE", original))
        third = (await decisions(env, topics, 3))[2]
        assert third.data.verdict.value == "DENY"
        assert [r.rule for r in third.data.reasons] == ["validity.replay"]

    released = await read_all(env.kafka, topics.approved)
    assert len(released) == 1  # released once, whatever was replayed
