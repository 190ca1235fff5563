"""The enforcer: consume submitted directives, decide, write decisions and approvals.

The policy comes from the policy topic (see ``policy_source``); until a valid version is in
force nothing is decided.

Per batch, one Kafka transaction holds the decisions, the approved directives, any dead
letters and the consumer offsets: a directive is decided exactly once or not at all, and
``read_committed`` readers never see a decision whose offsets were not committed with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Counter

from ..domain.codec import EventDecoder, encode_event
from ..domain.decision import DirectivePolicy
from ..domain.directives import approved_directive, decision_event
from ..domain.events import DirectiveEvent, Verdict
from ..errors import InvalidEvent
from ..runtime.dlq import DeadLetters
from ..runtime.kafka import assign_all, new_consumer, new_producer, start_clients
from ..runtime.lifecycle import bounded
from ..runtime.ops import HttpServer, ops_app
from ..runtime.settings import ServiceSettings
from ..runtime.topics import TopicNames
from .policy_source import PolicySource

log = logging.getLogger(__name__)
DIRECTIVES: EventDecoder[DirectiveEvent] = EventDecoder(DirectiveEvent)
MAX_CONSECUTIVE_FAILURES = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


class Enforcer:
    def __init__(self, settings: ServiceSettings, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.topics = TopicNames(settings.kafka.topic_prefix)
        self.group_id = f"{settings.kafka.topic_prefix}.enforcer"
        self.source = f"urn:c2bus:enforcer:{settings.instance}"
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "c2bus_enforcer_decisions", "Directives decided", ["verdict"], registry=self.registry
        )
        self.batch_failures = Counter(
            "c2bus_enforcer_batch_failures",
            "Transactions aborted and retried",
            registry=self.registry,
        )
        self.policies = PolicySource(settings.policy_set_id, self.registry)
        self.ready = False
        self.http = HttpServer(
            ops_app("c2bus enforcer", self.registry, lambda: self.ready),
            settings.host,
            settings.port,
        )

    async def run(self, stop: asyncio.Event) -> None:
        bootstrap = self.settings.kafka.bootstrap
        consumer = new_consumer(
            bootstrap, self.settings.instance, self.topics.submitted, group_id=self.group_id
        )
        policy_consumer = new_consumer(bootstrap, f"{self.settings.instance}-policy", group_id=None)
        producer = new_producer(
            bootstrap,
            self.settings.instance,
            transactional_id=f"{self.group_id}.{self.settings.instance}",
        )
        self.http.bind()
        await start_clients(bootstrap, producer, policy_consumer)
        try:
            await assign_all(policy_consumer, bootstrap, [self.topics.policy], from_start=True)
            await start_clients(bootstrap, consumer)
        except BaseException:
            await policy_consumer.stop()
            await producer.stop()
            raise
        dlq = DeadLetters(producer, self.topics.dlq, self.settings.instance, self.registry)
        log.info("enforcer.started", extra={"group_id": self.group_id, "port": self.http.port})
        timeout = self.settings.shutdown_timeout_s
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.http.serve())
            follower = tasks.create_task(self._follow_policy(policy_consumer, stop))
            try:
                if await self._wait_for_policy(stop):
                    self.ready = True
                    await self._consume(consumer, producer, dlq, stop)
            finally:
                self.ready = False
                follower.cancel()
                await bounded("consumer.stop", consumer.stop(), timeout)
                await bounded("policy_consumer.stop", policy_consumer.stop(), timeout)
                await bounded("producer.stop", producer.stop(), timeout)
                self.http.stop()

    async def _follow_policy(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    self.policies.apply(record.value)

    async def _wait_for_policy(self, stop: asyncio.Event) -> bool:
        """Fail closed: decide nothing until a valid policy is in force."""
        waited = 0.0
        while self.policies.current is None:
            if stop.is_set():
                return False
            if waited % 10 == 0:
                log.warning(
                    "enforcer.waiting_for_policy",
                    extra={"policy_set_id": self.settings.policy_set_id, "waited_s": waited},
                )
            await asyncio.sleep(0.5)
            waited += 0.5
        return True

    async def _consume(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        dlq: DeadLetters,
        stop: asyncio.Event,
    ) -> None:
        failures = 0
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batch:
                continue
            try:
                await self._decide_batch(batch, producer, dlq)
                failures = 0
            except AioKafkaError as exc:
                failures += 1
                self.batch_failures.inc()
                log.error("enforcer.batch_failed", extra={"error": repr(exc), "attempt": failures})
                for tp, records in batch.items():  # decide them again from the first
                    consumer.seek(tp, records[0].offset)
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))

    async def _decide_batch(
        self,
        batch: dict[TopicPartition, list[Any]],
        producer: AIOKafkaProducer,
        dlq: DeadLetters,
    ) -> None:
        policy = self.policies.current  # one version for the whole batch: swaps fall between
        assert policy is not None
        async with producer.transaction():
            for records in batch.values():
                for record in records:
                    await self._decide(record, policy, producer, dlq)
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
            await producer.send_offsets_to_transaction(offsets, self.group_id)

    async def _decide(
        self,
        record: Any,
        policy: DirectivePolicy,
        producer: AIOKafkaProducer,
        dlq: DeadLetters,
    ) -> None:
        try:
            if record.value is None:
                raise InvalidEvent("record has no value")
            directive = DIRECTIVES.decode_event(record.value)
        except InvalidEvent as exc:
            await dlq.send(record, "enforcer.decode", exc)
            return
        now = self.clock()
        decision = policy.decide(directive, now)
        event = decision_event(directive, decision, now, self.source)
        await producer.send(self.topics.decisions, encode_event(event), key=directive.id.encode())
        if decision.verdict is Verdict.ALLOW:
            await producer.send(
                self.topics.approved,
                encode_event(approved_directive(directive)),
                key=directive.data.target.encode(),
            )
        self.decisions.labels(decision.verdict.value).inc()
        log.info(
            "directive.decided",
            extra={
                "directive_id": directive.id,
                "verdict": decision.verdict.value,
                "issuer": directive.data.issuer,
                "target": directive.data.target,
                "rules": [r.rule for r in decision.reasons],
                "policy_version": decision.policy_version,
            },
        )


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    await Enforcer(settings).run(stop)
