"""The enforcer: consume submitted directives, decide, write decisions and approvals.

The policy comes from the policy topic (see ``policy_source``); until a valid version is in
force nothing is decided.

Per batch, one Kafka transaction holds the decisions, the approved directives, changes to
held directives, any dead letters and the consumer offsets: a directive is decided exactly
once or not at all, and ``read_committed`` readers never see a decision whose offsets were
not committed with it.

Approvals arrive on the same topic as directives, keyed by the same target unit, so they
share a partition and come in order. A HOLD keeps the directive in the held state (see
``held``); each approval re-evaluates it; it is released on ALLOW, and denied when it
expires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..domain.codec import EventDecoder, encode_event
from ..domain.decision import Approval, Decision, DirectivePolicy
from ..domain.directives import approved_directive, decision_event
from ..domain.events import ApprovalEvent, DirectiveEvent, SubmittedEvent, Verdict
from ..errors import InvalidEvent
from ..runtime.dlq import DeadLetters
from ..runtime.kafka import assign_all, new_consumer, new_producer, read_to_end, start_clients
from ..runtime.lifecycle import bounded
from ..runtime.ops import HttpServer, ops_app
from ..runtime.settings import ServiceSettings
from ..runtime.topics import TopicNames
from .held import Held, HeldDirectives, encode_seen, seen_key
from .policy_source import PolicySource

log = logging.getLogger(__name__)
SUBMITTED: EventDecoder[SubmittedEvent] = EventDecoder(SubmittedEvent)
MAX_CONSECUTIVE_FAILURES = 5
EXPIRY_SWEEP_S = 1.0


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
        self.held = HeldDirectives()
        self.held_gauge = Gauge(
            "c2bus_enforcer_held", "Directives held for approvals", registry=self.registry
        )
        self.ready = False
        self.http = HttpServer(
            ops_app("c2bus enforcer", self.registry, lambda: self.ready),
            settings.host,
            settings.port,
        )

    async def run(self, stop: asyncio.Event) -> None:
        bootstrap = self.settings.kafka.bootstrap
        consumer = new_consumer(bootstrap, self.settings.instance, group_id=self.group_id)
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
            consumer.subscribe([self.topics.submitted], listener=_HeldRestorer(self, bootstrap))
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
        next_sweep = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            try:
                if batch:
                    await self._decide_batch(batch, producer, dlq)
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + EXPIRY_SWEEP_S
                    await self._deny_expired(producer)
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

    async def _deny_expired(self, producer: AIOKafkaProducer) -> None:
        """Deny held directives that expired; forget ids whose directives expired."""
        now = self.clock()
        policy = self.policies.current
        expired = self.held.expired(now)
        forgotten = self.held.expired_seen(now)
        if policy is None or not (expired or forgotten):
            return
        async with producer.transaction():
            for held in expired:
                decision = policy.decide(held.directive, now, held.approvals)
                await self._record(held.directive, decision, now, producer, held)
            for directive_id, partition in forgotten:
                key = seen_key(directive_id).encode()
                await producer.send(self.topics.held, None, key=key, partition=partition)
        for directive_id, _ in forgotten:
            self.held.seen.pop(directive_id, None)

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
            event = SUBMITTED.decode_event(record.value)
        except InvalidEvent as exc:
            await dlq.send(record, "enforcer.decode", exc)
            return
        now = self.clock()
        if isinstance(event, ApprovalEvent):
            held = self.held.get(event.data.directive_id)
            if held is None:
                reason = f"directive {event.data.directive_id} is not held for approval"
                await dlq.send(record, "enforcer.approval", InvalidEvent(reason))
                return
            approval = Approval(event.data.approver, event.data.nation, frozenset(event.data.roles))
            held = Held(held.directive, held.approvals | {approval}, held.partition)
            decision = policy.decide(held.directive, now, held.approvals)
            await self._record(held.directive, decision, now, producer, held)
            return
        if self.held.known(event.id):
            await self._deny_replay(event, policy, now, producer, record)
            return
        held = Held(event, frozenset(), record.partition)
        await self._record(event, policy.decide(event, now), now, producer, held)

    async def _deny_replay(
        self,
        directive: DirectiveEvent,
        policy: DirectivePolicy,
        now: datetime,
        producer: AIOKafkaProducer,
        record: Any,
    ) -> None:
        """A directive id already decided (or held) came again: deny the copy, touch nothing."""
        decision = policy.decide(directive, now, replay=True)
        position = f"{record.partition}-{record.offset}"
        event = decision_event(directive, decision, now, self.source, replay_of=position)
        await producer.send(self.topics.decisions, encode_event(event), key=directive.id.encode())
        self.decisions.labels(decision.verdict.value).inc()
        log.warning(
            "directive.replay_denied",
            extra={
                "directive_id": directive.id,
                "partition": record.partition,
                "offset": record.offset,
            },
        )

    async def _record(
        self,
        directive: DirectiveEvent,
        decision: Decision,
        now: datetime,
        producer: AIOKafkaProducer,
        held: Held,
    ) -> None:
        """Write a decision and its consequences: release, hold, or end a hold."""
        approvals = len(held.approvals)
        event = decision_event(directive, decision, now, self.source, approvals)
        await producer.send(self.topics.decisions, encode_event(event), key=directive.id.encode())
        key = directive.id.encode()
        if decision.verdict is Verdict.HOLD:
            self.held.put(held)
            await producer.send(self.topics.held, held.encode(), key=key, partition=held.partition)
        else:
            if self.held.pop(directive.id) is not None:
                await producer.send(self.topics.held, None, key=key, partition=held.partition)
            # Remember the id until the directive expires: a copy of it is a replay.
            self.held.mark_seen(directive.id, directive.data.expires, held.partition)
            await producer.send(
                self.topics.held,
                encode_seen(directive.data.expires),
                key=seen_key(directive.id).encode(),
                partition=held.partition,
            )
        if decision.verdict is Verdict.ALLOW:
            await producer.send(
                self.topics.approved,
                encode_event(approved_directive(directive)),
                key=directive.data.target.encode(),
            )
        self.decisions.labels(decision.verdict.value).inc()
        self.held_gauge.set(len(self.held))
        log.info(
            "directive.decided",
            extra={
                "directive_id": directive.id,
                "verdict": decision.verdict.value,
                "issuer": directive.data.issuer,
                "target": directive.data.target,
                "rules": [r.rule for r in decision.reasons],
                "approvals": approvals,
                "policy_version": decision.policy_version,
            },
        )


class _HeldRestorer(ConsumerRebalanceListener):  # type: ignore[misc]
    """Held state follows the input partitions.

    On revoke the state of the revoked partitions is set aside; if the same rebalance gives
    a partition back, nobody else can have written to it meanwhile, so the set-aside state
    is current and is reused. Partitions new to this enforcer are restored from the held
    topic.
    """

    def __init__(self, enforcer: Enforcer, bootstrap: str) -> None:
        self.enforcer = enforcer
        self.bootstrap = bootstrap
        self.set_aside: dict[int, dict[str, Held]] = {}

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = {tp.partition for tp in revoked}
        dropped = self.enforcer.held.drop_partitions(partitions)
        self.set_aside = {p: {} for p in partitions}
        for directive_id, held in dropped.items():
            self.set_aside[held.partition][directive_id] = held

    async def on_partitions_assigned(self, assigned: Any) -> None:
        partitions = sorted(tp.partition for tp in assigned)
        kept = [p for p in partitions if p in self.set_aside]
        fresh = [p for p in partitions if p not in self.set_aside]
        held = self.enforcer.held
        for partition in kept:
            for entry in self.set_aside[partition].values():
                held.put(entry)
        self.set_aside = {}
        if fresh:
            held.drop_partitions(set(fresh))
            held.restore(await read_to_end(self.bootstrap, self.enforcer.topics.held, fresh))
        self.enforcer.held_gauge.set(len(held))
        log.info(
            "held.restored",
            extra={"kept_partitions": kept, "read_partitions": fresh, "held": len(held)},
        )


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    await Enforcer(settings).run(stop)
