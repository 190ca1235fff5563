"""Resume: replay from Kafka what a reconnecting console missed, then hand over to live.

While a partition is being replayed for a session, live routing skips it for that session
(the events stay in Kafka for the replay to read). The replay reads from the console's
position up to where live routing has got to, and hands the partition over in one step of
the event loop: from then on live routing delivers it, skipping offsets the replay already
handled. So no event is missed and none is sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from c2bus.adapters.kafka import kafka_step, new_consumer, start_client
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.settings import KafkaSettings
from c2bus.services.gateway.routing import Session
from c2bus.services.gateway.signals import signals_of

log = logging.getLogger(__name__)

TP = tuple[str, int]
#: Decode, check and queue one record for one session (the live path's own check).
Deliver = Callable[[Session, object], None]


class History:
    def __init__(
        self,
        kafka: KafkaSettings,
        client_id: str,
        live_next: dict[TP, int],
        deliver: Deliver,
        concurrency: int = 4,
    ) -> None:
        self.kafka = kafka
        self.client_id = client_id
        self.live_next = live_next  # per partition: the next offset live routing handles
        self.deliver = deliver
        self.slots = asyncio.Semaphore(concurrency)
        self._probe: AIOKafkaConsumer | None = None
        self._probe_lock = asyncio.Lock()

    async def log_starts(self, tps: list[TP]) -> dict[TP, int]:
        """The first offset Kafka still holds in each partition (retention moves it)."""
        async with self._probe_lock:
            if self._probe is None:
                probe = new_consumer(
                    self.kafka, f"{self.client_id}-history", group_id=None, fetch_max_wait_ms=100
                )
                await start_client(probe, self.kafka)
                self._probe = probe
            with kafka_step("log starts"):
                starts = await self._probe.beginning_offsets([TopicPartition(*tp) for tp in tps])
        return {(tp.topic, tp.partition): offset for tp, offset in starts.items()}

    async def close(self) -> None:
        async with self._probe_lock:  # a probe being started is then stopped here too
            if self._probe is not None:
                await self._probe.stop()
                self._probe = None

    async def replay(self, session: Session, starts: dict[TP, int]) -> None:
        """Deliver to ``session`` every entitled record from ``starts`` until live.

        The partitions must already be in ``session.catching_up``; each leaves it when the
        replay has reached live routing's position.
        """
        async with self.slots:
            # a short long-poll: stopping waits for the fetch in flight
            consumer = new_consumer(
                self.kafka, f"{self.client_id}-replay", group_id=None, fetch_max_wait_ms=100
            )
            await start_client(consumer, self.kafka)
            try:
                with kafka_step("replay"):
                    await self._replay(consumer, session, starts)
            finally:
                await bounded("replay.stop", consumer.stop(), 10)

    async def _replay(
        self, consumer: AIOKafkaConsumer, session: Session, starts: dict[TP, int]
    ) -> None:
        tps = {tp: TopicPartition(*tp) for tp in starts}
        consumer.assign(list(tps.values()))
        for tp, offset in starts.items():
            consumer.seek(tps[tp], offset)
        signals = signals_of(session.outbox)
        while session.catching_up:
            await signals.below_half.wait()  # paced by the console: never overfill its outbox
            batch = await consumer.getmany(
                *[tps[tp] for tp in session.catching_up], timeout_ms=100, max_records=500
            )
            for ktp, records in batch.items():
                tp = (ktp.topic, ktp.partition)
                if tp not in session.catching_up:
                    continue
                for record in records:
                    if record.offset <= session.marks.get(tp, -1):
                        continue
                    session.marks[tp] = record.offset
                    self.deliver(session, record)
            for tp in list(session.catching_up):
                position = await consumer.position(tps[tp])
                # No await between this comparison and the hand-over: live routing has
                # handled everything below live_next, the replay everything below position.
                if position >= self.live_next.get(tp, 0):
                    session.catching_up.discard(tp)
                    session.marks[tp] = max(session.marks.get(tp, -1), position - 1)
