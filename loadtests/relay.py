"""The enforcer benchmark's baseline: bare aiokafka consume → produce of the same bytes.

    python -m loadtests.relay BOOTSTRAP PREFIX [--interval-ms 100] [--copies N]

The canonical exactly-once relay, with the clients the enforcer uses (``new_consumer``:
``read_committed``, manual commits; ``new_producer``: idempotent, ``acks=all``,
transactional): in the enforcer's consumer group, it reads ``<prefix>.directives.submitted``
and, in one transaction per commit interval, writes each record's bytes unchanged to
``<prefix>.decisions`` and commits the input offsets with the transaction. No decoding, no
policy, one output record per input (``--copies 4``: the bytes four times, to the
decisions, status, held and approved topics, about as many records as the enforcer
writes per directive), one transactional producer: the machinery alone. It runs until
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from c2bus.adapters.kafka import new_consumer, new_producer, start_client
from c2bus.adapters.settings import KafkaSettings
from c2bus.adapters.topics import TopicNames


async def relay(kafka: KafkaSettings, prefix: str, interval_ms: int, copies: int = 1) -> None:
    topics = TopicNames(prefix)
    outputs = (topics.decisions, topics.status, topics.held, topics.approved)[:copies]
    group = f"{prefix}.enforcer"
    consumer = new_consumer(kafka, "bench-relay", topics.submitted, group_id=group)
    producer = new_producer(kafka, "bench-relay", transactional_id=f"{group}.p-relay")
    await start_client(producer, kafka)
    await start_client(consumer, kafka)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            deadline = loop.time() + interval_ms / 1000
            offsets = {}
            async with producer.transaction():
                while (remaining := deadline - loop.time()) > 0:
                    batch = await consumer.getmany(timeout_ms=max(1, int(remaining * 1000)))
                    for tp, records in batch.items():
                        for record in records:
                            for topic in outputs:
                                await producer.send(topic, record.value, key=record.key)
                        offsets[tp] = records[-1].offset + 1
                if offsets:
                    await producer.send_offsets_to_transaction(offsets, group)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix")
    parser.add_argument("--interval-ms", type=int, default=100)
    parser.add_argument("--copies", type=int, choices=(1, 2, 3, 4), default=1)
    args = parser.parse_args()
    # the enforcer's principal and client settings, from the environment the enforcer gets
    kafka = KafkaSettings.from_env(principal="enforcer")
    asyncio.run(relay(kafka, args.prefix, args.interval_ms, args.copies))


if __name__ == "__main__":
    main()
