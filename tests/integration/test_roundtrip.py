"""A CloudEvent survives a trip through a real broker, keyed as its topic promises."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from c2bus.adapters.kafka import client_options, read_to_end
from c2bus.adapters.settings import KafkaSettings
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import decode_event, encode_event
from c2bus.core.events import DirectiveEvent, TrackEvent


async def consume(
    kafka: KafkaSettings,
    topic: str,
    count: int,
    group_id: str,
    timeout_s: float = 30.0,
    **kwargs: Any,
) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(kafka),
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kwargs,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for part in batch.values():
                    records.extend(part)
    finally:
        await consumer.stop()
    return records


async def test_track_and_directive_round_trip(
    kafka: KafkaSettings, topics: TopicNames, group_id: str, valid_example: Any
) -> None:
    track = decode_event(json.dumps(valid_example("sa-track")))
    directive = decode_event(json.dumps(valid_example("directive")))
    assert isinstance(track, TrackEvent)
    assert isinstance(directive, DirectiveEvent)

    producer = AIOKafkaProducer(**client_options(kafka), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent_track = await producer.send_and_wait(
            topics.sa, encode_event(track), key=track.key().encode()
        )
        await producer.send_and_wait(
            topics.submitted, encode_event(directive), key=directive.key().encode()
        )
    finally:
        await producer.stop()

    [sa_record] = await consume(kafka, topics.sa, 1, group_id)
    [dir_record] = await consume(kafka, topics.submitted, 1, group_id + "-d")

    assert sa_record.key == b"TRK-4711"
    assert sa_record.partition == sent_track.partition
    assert decode_event(sa_record.value) == track
    assert dir_record.key == b"NLD-11AMB"
    received = decode_event(dir_record.value)
    assert received == directive
    assert received.label.allows(directive.classification, "NLD")


async def read_all(kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every committed record of ``topic`` up to its current end."""
    return await read_to_end(kafka, topic, timeout_s=timeout_s)
