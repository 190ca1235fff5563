"""Exactly-once enforcement on a real broker: a lane fenced by another holder of its
partition's transactional id recovers without losing or repeating a decision, and two
enforcers share the partitions. (Crashes, broker faults and zombies: tests/faults.)"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from datetime import UTC, datetime

from c2bus.adapters.kafka import new_producer, start_client
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import EventDecoder, encode_event
from c2bus.core.events import DecisionEvent, DirectiveStatusEvent
from c2bus.services.enforcer.app import Enforcer
from c2bus.tools.simulator.model import next_directive
from tests.faults.harness import reference_evaluator
from tests.integration.services import Env, eventually, publish_reference_policy, running
from tests.integration.test_roundtrip import read_all

DECISIONS: EventDecoder[DecisionEvent] = EventDecoder(DecisionEvent)
STATUS: EventDecoder[DirectiveStatusEvent] = EventDecoder(DirectiveStatusEvent)


def enforcer_named(env: Env, name: str) -> Enforcer:
    settings = env.settings("enforcer", C2BUS_ENFORCER_COMMIT_TIMEOUT_S="5")
    return Enforcer(dataclasses.replace(settings, instance=name))


def lane_failures(service: Enforcer, error: str) -> float:
    return sum(
        sample.value
        for metric in service.registry.collect()
        for sample in metric.samples
        if sample.name == "c2bus_enforcer_lane_failures_total"
        and sample.labels.get("error") == error
    )


async def submit(env: Env, topic: str, first: int, count: int) -> tuple[list[str], int]:
    """Submit ``count`` directives; returns their ids and the busiest input partition."""
    evaluator = reference_evaluator()
    rng = random.Random(first)
    producer = new_producer(env.kafka, "test-load")
    await start_client(producer, env.kafka)
    ids, deliveries = [], []
    try:
        for seq in range(first, first + count):
            event = next_directive(
                evaluator, rng, datetime.now(UTC), "urn:test", seq, hold_ratio=0.0
            )
            ids.append(event.id)
            deliveries.append(
                await producer.send(topic, encode_event(event), key=event.data.target.encode())
            )
        partitions = Counter(m.partition for m in await asyncio.gather(*deliveries))
    finally:
        await producer.stop()
    return ids, partitions.most_common(1)[0][0]


async def decided(env: Env, topics: TopicNames, count: int, timeout_s: float = 60) -> Counter[str]:
    async with asyncio.timeout(timeout_s):
        while True:
            records = await read_all(env.kafka, topics.decisions)
            per_directive = Counter(
                DECISIONS.decode_event(r.value).data.directive_id for r in records
            )
            if len(per_directive) >= count:
                return per_directive
            await asyncio.sleep(0.3)


def sample(service: Enforcer, name: str, **labels: str) -> float:
    return service.registry.get_sample_value(name, labels) or 0.0


async def test_a_fenced_partition_recovers_and_decides_everything_once(
    env: Env, topics: TopicNames
) -> None:
    await publish_reference_policy(env)
    service = enforcer_named(env, "enforcer-fenced")
    async with running(service, lambda: service.ready):
        first, busiest = await submit(env, topics.submitted, 0, 150)
        await decided(env, topics, len(first))
        # Another holder of a partition's transactional id appears (as a new owner would):
        # the enforcer's producer for that partition is fenced from now on.
        intruder = new_producer(
            env.kafka, "intruder", transactional_id=f"{env.prefix}.enforcer.p{busiest}"
        )
        await start_client(intruder, env.kafka)
        await intruder.begin_transaction()
        await intruder.stop()
        second, _ = await submit(env, topics.submitted, 150, 150)
        per_directive = await decided(env, topics, len(first) + len(second))
        assert set(per_directive) == set(first + second)
        assert all(n == 1 for n in per_directive.values()), per_directive.most_common(3)
        assert lane_failures(service, "ProducerFenced") >= 1
    status = [STATUS.decode_event(r.value) for r in await read_all(env.kafka, topics.status)]
    assert Counter(s.data.directive_id for s in status) == per_directive  # DECIDED, once each
    assert {s.data.state.value for s in status} == {"DECIDED"}


async def test_two_enforcers_share_the_partitions_and_decide_each_directive_once(
    env: Env, topics: TopicNames
) -> None:
    await publish_reference_policy(env)
    one, two = enforcer_named(env, "enforcer-one"), enforcer_named(env, "enforcer-two")
    async with running(one, lambda: one.ready), running(two, lambda: two.ready):
        await eventually(  # each owns half the partitions, ready
            lambda: [sample(s, "c2bus_enforcer_partitions") for s in (one, two)] == [3.0, 3.0],
            timeout_s=30,
        )
        ids, _ = await submit(env, topics.submitted, 0, 300)
        per_directive = await decided(env, topics, len(ids))
        assert set(per_directive) == set(ids)
        assert all(n == 1 for n in per_directive.values())
        counted = sum(
            sample(service, "c2bus_enforcer_decisions_total", verdict=verdict)
            for service in (one, two)
            for verdict in ("ALLOW", "DENY")
        )
        assert counted == len(ids)  # counted once, when committed
