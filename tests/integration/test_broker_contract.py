"""The broker contract exactly-once enforcement stands on, checked against the real broker
and client with no c2bus code in between: aborted data is invisible under
read_committed, committed data arrives exactly once, and consumer offsets sent to a
transaction commit with it or not at all (docs/exactly-once.md). A Kafka or aiokafka upgrade
that broke any of these would fail here first, before the enforcer's own tests, and say
which promise broke."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from c2bus.adapters.kafka import client_options
from c2bus.adapters.settings import KafkaSettings
from c2bus.adapters.topics import TopicNames
from tests.integration.test_roundtrip import consume


async def test_read_committed_sees_committed_once_and_never_aborted(
    kafka: KafkaSettings, topics: TopicNames, prefix: str
) -> None:
    topic = topics.approved
    producer = AIOKafkaProducer(
        **client_options(kafka), transactional_id=f"{prefix}-txn", acks="all"
    )
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(5):
                await producer.send(topic, f"committed-a-{i}".encode(), key=b"unit-1")
        await producer.begin_transaction()
        for i in range(5):
            await producer.send(topic, f"aborted-{i}".encode(), key=b"unit-1")
        await producer.flush()
        await producer.abort_transaction()
        async with producer.transaction():
            for i in range(5):
                await producer.send(topic, f"committed-b-{i}".encode(), key=b"unit-1")
    finally:
        await producer.stop()

    committed = await consume(kafka, topic, 10, f"{prefix}-rc", isolation_level="read_committed")
    values = [r.value.decode() for r in committed]
    expected = [f"committed-a-{i}" for i in range(5)] + [f"committed-b-{i}" for i in range(5)]
    assert values == expected  # once each, in order, nothing aborted in between

    # The aborted records really reached the log: read_uncommitted sees them.
    everything = await consume(kafka, topic, 15, f"{prefix}-ru", isolation_level="read_uncommitted")
    assert sorted(r.value.decode() for r in everything) == sorted(
        expected + [f"aborted-{i}" for i in range(5)]
    )


async def test_offsets_commit_with_the_transaction_or_not_at_all(
    kafka: KafkaSettings, topics: TopicNames, prefix: str
) -> None:
    group = f"{prefix}-enforcer"
    tp = TopicPartition(topics.submitted, 0)
    producer = AIOKafkaProducer(
        **client_options(kafka), transactional_id=f"{prefix}-offsets", acks="all"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topics.decisions, b"decision-1", key=b"d-1")
            await producer.send_offsets_to_transaction({tp: 7}, group)
        await producer.begin_transaction()
        await producer.send(topics.decisions, b"decision-2", key=b"d-2")
        await producer.send_offsets_to_transaction({tp: 9}, group)
        await producer.abort_transaction()
    finally:
        await producer.stop()

    reader = AIOKafkaConsumer(**client_options(kafka), group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        assert await reader.committed(tp) == 7
    finally:
        await reader.stop()
