"""Kafka in: every record of the SA, approved-directive, decision, status and policy topics
is decoded once, its frame encoded once, remembered where the snapshot or acknowledgements
need it, and routed to every entitled session (:mod:`routing`).

At start-up the SA, approved and status topics are read back over the snapshot horizon (the
latest-SA table, the directive directory and each directive's lifecycle state) and the
policy topic from its start (the command structure that scopes units), before any console
is accepted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer

from c2bus.adapters.dlq import DeadLetters
from c2bus.adapters.kafka import kafka_step, pause_refused
from c2bus.adapters.policy_source import PolicySource
from c2bus.adapters.signing import APPROVED, DECISIONS, STATUS, TrustStore
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import EventDecoder, encode_event
from c2bus.core.directives import stale_release
from c2bus.core.entitlement import Routed, UnitTree
from c2bus.core.events import (
    SA_CLOCK_SKEW,
    DecisionEvent,
    DirectiveEvent,
    DirectiveStatusEvent,
    Envelope,
    SaEvent,
    dated_ahead,
    event_type,
)
from c2bus.core.protocol import Stream, event_frame
from c2bus.errors import InvalidEvent, KafkaRefused, UnverifiedRecord
from c2bus.services.gateway.metrics import GatewayMetrics
from c2bus.services.gateway.routing import Hub, Session
from c2bus.services.gateway.state import DirectiveDirectory, Latest, LatestSa, sa_key

log = logging.getLogger(__name__)

#: The streams whose records the gateway delivers only when the enforcer's key signed them.
VERIFIED = {Stream.DIRECTIVES: APPROVED, Stream.DECISIONS: DECISIONS, Stream.STATUS: STATUS}


class Intake:
    def __init__(
        self,
        topics: TopicNames,
        *,
        hub: Hub,
        latest: LatestSa,
        directory: DirectiveDirectory,
        policy: PolicySource,
        metrics: GatewayMetrics,
        trust: TrustStore,
        horizon: timedelta,
    ) -> None:
        self.topics = topics
        self.trust = trust
        #: how far back releases are read at start-up: a release decided longer ago cannot be
        #: told from a copy of it, so it is refused as stale
        self.horizon = horizon
        self.hub = hub
        self.latest = latest
        self.directory = directory
        self.policy = policy
        self.metrics = metrics
        self.decoders: dict[str, tuple[Stream, EventDecoder[Any]]] = {
            topics.sa: (Stream.SA, EventDecoder(SaEvent)),
            topics.approved: (Stream.DIRECTIVES, EventDecoder(DirectiveEvent)),
            topics.decisions: (Stream.DECISIONS, EventDecoder(DecisionEvent)),
            topics.status: (Stream.STATUS, EventDecoder(DirectiveStatusEvent)),
        }
        self.stream_topics: dict[Stream, str] = {s: t for t, (s, _) in self.decoders.items()}

    @property
    def topic_names(self) -> list[str]:
        """Every topic the gateway reads."""
        return [*self.decoders, self.topics.policy]

    async def position(self, consumer: AIOKafkaConsumer, horizon_s: float) -> None:
        """Start SA, approved directives and their lifecycle steps at the snapshot horizon,
        policy at its start, decisions at the end."""
        tps = consumer.assignment()
        since = int((time.time() - horizon_s) * 1000)
        topics = self.topics
        back = [tp for tp in tps if tp.topic in (topics.sa, topics.approved, topics.status)]
        with kafka_step("position"):
            found = await consumer.offsets_for_times({tp: since for tp in back})
            for tp in back:
                hit = found.get(tp)
                if hit is not None:
                    consumer.seek(tp, hit.offset)
                else:
                    await consumer.seek_to_end(tp)
            policy = [tp for tp in tps if tp.topic == self.topics.policy]
            await consumer.seek_to_beginning(*policy)
            for tp in tps:
                position = await consumer.position(tp)
                if tp.topic != self.topics.policy:
                    self.hub.live_next[(tp.topic, tp.partition)] = position

    async def catch_up(self, consumer: AIOKafkaConsumer, dlq: DeadLetters) -> None:
        """Read the horizon and the policy before accepting consoles."""
        tps = list(consumer.assignment())
        started = time.monotonic()
        with kafka_step("catch up"):
            ends = await consumer.end_offsets(tps)
            while True:
                behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                if not behind:
                    break
                batch = await consumer.getmany(*behind, timeout_ms=200, max_records=1000)
                await self._route_batch(consumer, batch, dlq)
        log.info(
            "gateway.caught_up",
            extra={
                "entities": len(self.latest),
                "policy_version": self.policy.current_version,
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    async def consume(
        self, consumer: AIOKafkaConsumer, dlq: DeadLetters, stop: asyncio.Event
    ) -> None:
        # A batch is routed without yielding; after each batch the session writers get the
        # loop to flush.
        refused = 0
        while not stop.is_set():
            try:
                with kafka_step("fetch"):
                    batch = await consumer.getmany(timeout_ms=200, max_records=200)
                    await self._route_batch(consumer, batch, dlq)
            except KafkaRefused as exc:  # consoles keep their sessions meanwhile
                refused += 1
                await pause_refused("gateway.fetch", exc, refused, stop)
                continue
            refused = 0
            await asyncio.sleep(0)

    async def _route_batch(
        self, consumer: AIOKafkaConsumer, batch: dict[Any, list[Any]], dlq: DeadLetters
    ) -> None:
        """Route a fetched batch, then move live routing past any transaction markers."""
        for records in batch.values():
            for record in records:
                await self.route(record, dlq)
        for tp in batch:
            if tp.topic != self.topics.policy:
                self.hub.live_next[(tp.topic, tp.partition)] = await consumer.position(tp)

    def decode(self, record: Any) -> Routed:
        """Decode a record once: its stream, event, label, frame and SA entity key.

        Raises :class:`InvalidEvent` for anything that is not a valid, labelled event (SA
        dated more than the skew ahead of this clock included), and
        :class:`UnverifiedRecord` for an approved directive, a decision or a lifecycle step
        that a key trusted for it did not sign (the enforcer's; a gateway's for steps), and
        for an approved directive that is stale (expired, or decided before the horizon) or
        a copy of a release read elsewhere.
        """
        stream, decoder = self.decoders[record.topic]
        if record.value is None:
            raise InvalidEvent("record has no value")
        family = VERIFIED.get(stream)
        if family is not None:
            why = self.trust.check(family, record.value, record.headers)
            if why is not None:
                raise UnverifiedRecord(why)
        try:
            event: Envelope = decoder.decode_event(record.value)
            label = event.label
        except ValueError as exc:  # a label that does not parse: never delivered
            raise InvalidEvent(str(exc)) from exc
        position = f"{record.topic}/{record.partition}/{record.offset}"
        if stream is Stream.SA:
            ahead = dated_ahead(event, datetime.now(UTC))
            if ahead is not None:
                raise InvalidEvent(ahead, "$.time")
        elif isinstance(event, DirectiveEvent):
            now = datetime.now(UTC)
            why = stale_release(event, now, self.horizon, SA_CLOCK_SKEW)
            why = why or self.directory.replay_of(event, position)
            if why is not None:
                raise UnverifiedRecord(why)
        message = event_frame(stream, position, encode_event(event))
        key = sa_key(event) if stream is Stream.SA else None
        return Routed(stream, event, label, message, key)

    async def route(self, record: Any, dlq: DeadLetters) -> None:
        """One record of a topic the gateway reads, live: remember it and route it."""
        if record.topic == self.topics.policy:
            if self.policy.apply(record.value) and self.policy.current is not None:
                fallen = self.hub.rescope(UnitTree(self.policy.current.policy.superiors))
                if fallen:
                    log.info("gateway.rescoped", extra={"closed": [s.id for s in fallen]})
            return
        tp = (record.topic, record.partition)
        try:
            routed = self.decode(record)
        except InvalidEvent as exc:
            self.hub.live_next[tp] = record.offset + 1
            await dlq.send(record, "gateway.decode", exc)
            return
        kind = event_type(routed.event)
        metrics = self.metrics
        metrics.flow.received(record.topic, kind)
        if routed.key is not None:
            self.latest.update(routed.key, Latest(routed.event, routed.label, routed.message))
        elif isinstance(routed.event, DirectiveEvent):
            position = f"{record.topic}/{record.partition}/{record.offset}"
            self.directory.add(routed.event, record.timestamp / 1000, position)
        elif isinstance(routed.event, DirectiveStatusEvent):
            position = f"{record.topic}/{record.partition}/{record.offset}"
            if self.directory.read_step(routed.event, position) is None:
                metrics.lifecycle_ignored.labels(routed.event.data.state.value).inc()
        delivered = self.hub.route(routed, tp, record.offset)
        # Live routing has now handled this offset: a replay may hand over past it.
        self.hub.live_next[tp] = record.offset + 1
        if delivered:
            metrics.sent.labels(routed.stream.value, kind).inc(delivered)
            age = time.time() - routed.event.time.timestamp()
            metrics.event_age.labels(routed.stream.value).observe(max(0.0, age))

    def replayed(self, session: Session, record: Any) -> None:
        """One record read back for a resuming session: the live path's checks, for it alone."""
        try:
            routed = self.decode(record)
        except InvalidEvent:
            self.metrics.replay_skipped.inc()  # dead-lettered when it was live
            return
        if session.offer(self.hub.tree, routed):
            self.metrics.sent.labels(routed.stream.value, event_type(routed.event)).inc()
