"""Lifecycle steps the gateway writes, each signed with its key: DELIVERED when a directive
reaches a console of its target, the consoles' WILCO, CANTCO and HAVE_DO, and EXPIRED when a
directive's validity ends before it was refused or done; and what its consoles submit
(directives, and approvals it attests with its key).

DELIVERED steps are produced off the console writers: a writer hands the step to a bounded
queue and goes on sending; one task produces them in order and retries a failed produce
with backoff until Kafka takes it (the step's id names the directive and the console's
subject, so a retried copy is recognisable). Acknowledgements are produced while the console
waits for its ``acked`` reply, which carries the record's position.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from c2bus.adapters.kafka import kafka_step, send_encoded, send_event
from c2bus.adapters.signing import STATUS, Signer
from c2bus.core.codec import encode_event
from c2bus.core.directives import lifecycle_step
from c2bus.core.events import DirectiveEvent, DirectiveState, DirectiveStatusEvent, Envelope
from c2bus.core.events import event_type as type_of
from c2bus.core.identity import Identity
from c2bus.errors import KafkaError, Refused
from c2bus.services.gateway.metrics import GatewayMetrics
from c2bus.services.gateway.routing import Session
from c2bus.services.gateway.state import DirectiveDirectory

log = logging.getLogger(__name__)
#: DELIVERED steps waiting to be produced, at most (a writer past it waits)
QUEUE_LIMIT = 10_000
PRODUCE_TIMEOUT_S = 10.0
RETRY_MAX_S = 5.0
BATCH = 500
#: how often the gateway looks for directives whose validity ended
EXPIRY_SWEEP_S = 1.0
#: a directive delivered to a console's session, and when (epoch s)
Delivery = tuple[Session, DirectiveEvent, float]


def status_step(
    directive: DirectiveEvent,
    state: DirectiveState,
    identity: Identity,
    reason: str | None,
    source: str,
) -> DirectiveStatusEvent:
    return lifecycle_step(
        directive,
        state,
        event_id=f"{state.value.lower()}:{directive.id}:{identity.subject}",
        actor=identity.unit,
        source=source,
        now=datetime.now(UTC),
        reason=reason,
    )


class Reports:
    def __init__(
        self,
        status_topic: str,
        source: str,
        directory: DirectiveDirectory,
        metrics: GatewayMetrics,
        signer: Signer,
        *,
        actor: str,
    ) -> None:
        self.status_topic = status_topic
        #: the ``actor`` of the EXPIRED steps it writes
        self.actor = actor
        #: signs every lifecycle step this gateway writes (consoles get only signed ones) and
        #: the approvals of the approvers it authenticated
        self.signer = signer
        #: the headers of a batch of steps (their values): one signature over their tree
        self.sign_steps: Callable[[list[bytes]], list[list[tuple[str, bytes]]]] = lambda values: (
            signer.tree_headers([(STATUS, value) for value in values])
        )
        self.source = source
        self.directory = directory
        self.metrics = metrics
        self.producer: AIOKafkaProducer | None = None
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(QUEUE_LIMIT)

    async def produce(self, topic: str, event: Envelope, family: str | None = None) -> str:
        """Produce one event, signed as a record of ``family`` if given, and wait for Kafka
        to take it; its position, or Refused."""
        if self.producer is None:
            raise Refused("unavailable", "the gateway is shutting down")
        sign = None if family is None else functools.partial(self.signer.headers, family)
        try:
            with kafka_step("produce"):
                async with asyncio.timeout(PRODUCE_TIMEOUT_S):
                    sent = await send_event(self.producer, topic, event, sign)
                    meta = await sent
        except KafkaError as exc:
            log.error("produce.failed", extra={"topic": topic, "error": str(exc)})
            raise Refused("unavailable", exc.for_caller("it")) from exc
        self.metrics.flow.sent(topic, type_of(event))
        return f"{meta.topic}/{meta.partition}/{meta.offset}"

    async def delivered(self, session: Session, directive: DirectiveEvent) -> None:
        """A directive reached a console of its target: report it (once per session)."""
        if directive.id in session.delivered:
            return
        session.delivered.add(directive.id)
        await self.queue.put((session, directive, time.time()))

    async def expire(self) -> None:
        """Write EXPIRED, every sweep, for the directives remembered whose validity ended
        before they were refused (CANTCO) or done (HAVE_DO). Every gateway does, under one
        event id per directive: the first step read stands, the others change nothing."""
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_S)
            now = datetime.now(UTC)
            for directive in self.directory.expired(now):
                expires = directive.data.expires.isoformat()
                status = lifecycle_step(
                    directive,
                    DirectiveState.EXPIRED,
                    event_id=f"expired:{directive.id}",
                    actor=self.actor,
                    source=self.source,
                    now=now,
                    reason=f"its validity ended at {expires}",
                )
                try:
                    position = await self.produce(self.status_topic, status, STATUS)
                except Refused:
                    self.directory.expire_again(directive)  # Kafka did not take it: next sweep
                    continue
                self.directory.wrote(directive.id, DirectiveState.EXPIRED, position)
                self.metrics.lifecycle.labels(DirectiveState.EXPIRED.value).inc()
                log.info("directive.expired", extra={"directive_id": directive.id})

    async def run(self) -> None:
        """Produce the DELIVERED steps queued, a batch at a time, until Kafka takes each."""
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < BATCH:
                batch.append(self.queue.get_nowait())
            backoff = 0.1
            while batch:
                batch = await self._produce_batch(batch)
                if batch:
                    log.warning(
                        "directive.delivered_retry",
                        extra={"steps": len(batch), "retry_in_s": backoff},
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, RETRY_MAX_S)

    async def _produce_batch(self, batch: list[Delivery]) -> list[Delivery]:
        """Send every step, signed together as one record tree, then wait for them all;
        returns those Kafka did not take."""
        producer = self.producer
        if producer is None:
            return batch
        steps = [
            (
                item,
                status_step(item[1], DirectiveState.DELIVERED, item[0].identity, None, self.source),
            )
            for item in batch
        ]
        values = [encode_event(status) for _, status in steps]
        signed = self.sign_steps(values)
        sent: list[tuple[Delivery, DirectiveStatusEvent, asyncio.Future[Any]]] = []
        failed: list[Delivery] = []
        for (item, status), value, headers in zip(steps, values, signed, strict=True):
            try:
                with kafka_step("produce"):
                    future = await send_encoded(
                        producer, self.status_topic, status.key(), value, headers
                    )
            except KafkaError as exc:
                log.error("produce.failed", extra={"topic": self.status_topic, "error": str(exc)})
                failed.append(item)
                continue
            sent.append((item, status, future))
        for item, status, future in sent:
            try:
                with kafka_step("produce"):
                    async with asyncio.timeout(PRODUCE_TIMEOUT_S):
                        await future
            except KafkaError as exc:
                log.error("produce.failed", extra={"topic": self.status_topic, "error": str(exc)})
                failed.append(item)
                continue
            self._reported(item, status)
        return failed

    def _reported(self, item: Delivery, status: DirectiveStatusEvent) -> None:
        session, directive, delivered_at = item
        self.metrics.flow.sent(self.status_topic, type_of(status))
        self.metrics.lifecycle.labels(DirectiveState.DELIVERED.value).inc()
        log.info(
            "directive.delivered",
            extra={
                "directive_id": directive.id,
                "session": session.id,
                "unit": directive.data.target,
            },
        )
        approved_at = self.directory.first_delivery(directive.id, delivered_at)
        if approved_at is not None:
            self.metrics.hops.labels("delivered").observe(max(0.0, delivered_at - approved_at))
