"""The enforcer: consume submitted directives, decide, write decisions and approvals.

The policy comes from the policy topic (see ``policy_source``); until a valid version is in
force nothing is decided.

Exactly once, per input partition (see ``lanes`` and ``docs/exactly-once.md``): every
assigned partition has a lane with its own transactional producer. Records are decided in
commit windows of ``C2BUS_ENFORCER_COMMIT_INTERVAL_MS``; at the end of a window each lane
commits one transaction holding its decisions, DECIDED status events, approved directives,
changes to held directives, dead letters and its input offset. A directive is decided exactly
once or not at all, and ``read_committed`` readers never see a decision whose offset was not
committed with it.

Failure of any step of a lane (fenced, out-of-order sequence, a coordinator that moved, a
timeout) fails that lane alone: its transaction is aborted, its producer closed, its
in-memory state dropped; after a backoff it is set up again from what Kafka committed. A
watchdog restarts the whole pipeline if it stops making progress.

Approvals arrive on the same topic as directives, keyed by the same target unit, so they
share a partition and come in order. A HOLD keeps the directive in the held state (see
``held``); each approval re-evaluates it; it is released on ALLOW, and denied when it
expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import IllegalOperation
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from c2bus.adapters.dlq import DeadLetters
from c2bus.adapters.kafka import assign_all, new_consumer, new_producer, read_to_end, start_clients
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.metrics import ConsumerLag, EventFlow, directive_hops, seconds_since
from c2bus.adapters.ops import HttpServer, ops_app
from c2bus.adapters.policy_source import PolicySource
from c2bus.adapters.settings import ServiceSettings
from c2bus.adapters.topics import TopicNames
from c2bus.adapters.watchdog import Heartbeat, supervise
from c2bus.core.codec import EventDecoder, encode_event
from c2bus.core.decision import Approval, Decision, DirectivePolicy
from c2bus.core.directives import approved_directive, decided_status, decision_event
from c2bus.core.events import ApprovalEvent, DirectiveEvent, SubmittedEvent, Verdict, event_type
from c2bus.core.held import Held, HeldDirectives, encode_seen, seen_key
from c2bus.errors import InvalidEvent
from c2bus.errors import KafkaError as C2BusKafkaError
from c2bus.services.enforcer.lanes import FENCING_ERRORS, Lane, Lanes

log = logging.getLogger(__name__)
SUBMITTED: EventDecoder[SubmittedEvent] = EventDecoder(SubmittedEvent)
EXPIRY_SWEEP_S = 1.0
MAX_RECORDS = 1000
#: after being fenced, wait for the rebalance that will likely take the partition away
FENCED_BACKOFF_S = 5.0
#: what a failing Kafka step can raise; anything else is a bug and restarts the pipeline
KAFKA_FAILURES = (AioKafkaError, IllegalOperation, TimeoutError, OSError, C2BusKafkaError)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Enforcer:
    def __init__(self, settings: ServiceSettings, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.config = settings.enforcer
        self.clock = clock
        self.topics = TopicNames(settings.kafka.topic_prefix)
        self.group_id = f"{settings.kafka.topic_prefix}.enforcer"
        self.actor = f"enforcer:{settings.instance}"
        self.source = f"urn:c2bus:{self.actor}"
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "c2bus_enforcer_decisions",
            "Directives decided (counted when their transaction commits)",
            ["verdict"],
            registry=self.registry,
        )
        self.decision_rules = Counter(
            "c2bus_enforcer_decision_rules",
            "Rules cited by committed decisions, by verdict and rule (a decision cites one "
            "or more)",
            ["verdict", "rule"],
            registry=self.registry,
        )
        for verdict in Verdict:
            self.decisions.labels(verdict.value)
        self.evaluation_seconds = Histogram(
            "c2bus_enforcer_evaluation_seconds",
            "Time the policy took to decide one directive",
            buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1),
            registry=self.registry,
        )
        self.hops = directive_hops(self.registry, ("decided",))
        self.flow = EventFlow(self.registry)
        self.lag = ConsumerLag(self.registry)
        self._consumer: AIOKafkaConsumer | None = None
        self.transactions = Counter(
            "c2bus_enforcer_transactions",
            "Enforcer transactions (one per partition and commit window) by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("committed", "aborted"):
            self.transactions.labels(outcome)
        self.lane_failures = Counter(
            "c2bus_enforcer_lane_failures",
            "Partition lanes failed and set up again, by step and error",
            ["stage", "error"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "c2bus_enforcer_pipeline_restarts",
            "Pipeline restarts by the watchdog, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "c2bus_enforcer_commit_seconds",
            "Time to commit one window (all its partitions' transactions, or flush + commit)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
            registry=self.registry,
        )
        self.partitions = Gauge(
            "c2bus_enforcer_partitions", "Input partitions owned and ready", registry=self.registry
        )
        self.partitions.set_function(lambda: sum(lane.ready for lane in self.lanes.values()))
        self.policies = PolicySource(settings.policy_set_id, self.registry)
        self.held = HeldDirectives()
        self.held_gauge = Gauge(
            "c2bus_enforcer_held", "Directives held for approvals", registry=self.registry
        )
        self.held_gauge.set_function(lambda: len(self.held))
        self.dlq = DeadLetters(None, self.topics.dlq, settings.instance, self.registry)
        self.lanes = Lanes()
        self._shared: AIOKafkaProducer | None = None
        self.ready = False
        self._next_sweep = 0.0
        self.http = HttpServer(
            ops_app("c2bus enforcer", self.registry, lambda: self.ready),
            settings.host,
            settings.port,
        )

    @property
    def exactly_once(self) -> bool:
        return self.config.exactly_once

    async def run(self, stop: asyncio.Event) -> None:
        bootstrap = self.settings.kafka.bootstrap
        policy_consumer = new_consumer(bootstrap, f"{self.settings.instance}-policy", group_id=None)
        self.http.bind()
        await start_clients(bootstrap, policy_consumer)
        try:
            await assign_all(policy_consumer, bootstrap, [self.topics.policy], from_start=True)
        except BaseException:
            await policy_consumer.stop()
            raise
        log.info(
            "enforcer.started",
            extra={
                "group_id": self.group_id,
                "port": self.http.port,
                "exactly_once": self.exactly_once,
                "commit_interval_ms": self.config.commit_interval_ms,
            },
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.http.serve())
            tasks.create_task(self.lag.follow(lambda: self._consumer, stop))
            follower = tasks.create_task(self._follow_policy(policy_consumer, stop))
            try:
                if await self._wait_for_policy(stop):
                    await supervise(
                        "enforcer.pipeline",
                        lambda beat: self._pipeline(beat, stop),
                        stop,
                        stall_s=self.config.watchdog_s,
                        restarts=self.restarts,
                    )
            finally:
                follower.cancel()
                timeout = self.settings.shutdown_timeout_s
                await bounded("policy_consumer.stop", policy_consumer.stop(), timeout)
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

    # -- the pipeline: one consumer, a lane per assigned partition ---------------------------

    async def _pipeline(self, beat: Heartbeat, stop: asyncio.Event) -> None:
        bootstrap = self.settings.kafka.bootstrap
        consumer = new_consumer(
            bootstrap,
            self.settings.instance,
            group_id=self.group_id,
            session_timeout_ms=self.config.session_timeout_ms,
        )
        shared = None if self.exactly_once else new_producer(bootstrap, self.settings.instance)
        self._shared = shared
        lanes = self.lanes = Lanes()
        await start_clients(bootstrap, *([shared] if shared else []), consumer)
        self._consumer = consumer
        try:
            consumer.subscribe(
                [self.topics.submitted], listener=_LaneListener(self, consumer, lanes)
            )
            self.ready = True
            while not stop.is_set():
                await self._window(consumer, lanes)
                beat.beat()
        finally:
            self.ready = False
            self._consumer = None
            timeout = self.settings.shutdown_timeout_s
            await bounded("consumer.stop", consumer.stop(), timeout)
            for lane in list(lanes.values()):
                await self._close_lane(lane)
            lanes.clear()
            if shared is not None:
                await bounded("producer.stop", shared.stop(), timeout)

    async def _window(self, consumer: AIOKafkaConsumer, lanes: Lanes) -> None:
        """Set up lanes that need it, decide for one commit interval, then commit.

        The lanes' lock is held while deciding and committing but never across ``getmany``,
        which waits for a rebalance to finish, and a rebalance needs the lock.
        """
        loop = asyncio.get_running_loop()
        async with lanes.lock:
            await self._set_up(consumer, lanes)
        deadline = loop.time() + self.config.commit_interval_ms / 1000
        while (remaining := deadline - loop.time()) > 0:
            batch = await consumer.getmany(
                timeout_ms=max(1, int(remaining * 1000)), max_records=MAX_RECORDS
            )
            # The version in force when the batch arrived decides all of it: a swap falls
            # between two batches, never inside one, and never waits for the window's end
            # (a directive sent after a new version is in force is decided by it).
            policy = self.policies.current
            assert policy is not None
            async with lanes.lock:
                for tp, records in batch.items():
                    lane = lanes.get(tp.partition)
                    if lane is not None and lane.ready:
                        await self._decide_records(consumer, lane, records, policy)
        policy = self.policies.current
        assert policy is not None
        async with lanes.lock:
            if loop.time() >= self._next_sweep:
                self._next_sweep = loop.time() + EXPIRY_SWEEP_S
                for lane in list(lanes.values()):
                    if lane.ready:
                        await self._deny_expired(consumer, lane, policy)
            await self._commit(consumer, [lane for lane in lanes.values() if lane.dirty])

    def _tp(self, lane: Lane) -> TopicPartition:
        return TopicPartition(self.topics.submitted, lane.partition)

    def _producer(self, lane: Lane) -> AIOKafkaProducer:
        """The lane's own transactional producer, or (at least once) the shared one."""
        producer = lane.producer or self._shared
        assert producer is not None
        return producer

    async def _set_up(self, consumer: AIOKafkaConsumer, lanes: Lanes) -> None:
        """Make due lanes ready: fence earlier owners, then read what they committed."""
        now = asyncio.get_running_loop().time()
        due = [lane for lane in lanes.values() if not lane.ready and lane.retry_at <= now]
        if not due:
            return
        if self.exactly_once:
            started = await asyncio.gather(*(self._start_producer(consumer, lane) for lane in due))
            due = [lane for lane, ok in zip(due, started, strict=True) if ok]
            if not due:
                return
        partitions = [lane.partition for lane in due]
        try:
            async with asyncio.timeout(self.config.commit_timeout_s):
                positions: dict[int, int] = {}
                for lane in due:
                    tp = self._tp(lane)
                    committed = await consumer.committed(tp)
                    if committed is None:
                        committed = (await consumer.beginning_offsets([tp]))[tp]
                    positions[lane.partition] = committed
                self.held.drop_partitions(set(partitions))
                records = await read_to_end(
                    self.settings.kafka.bootstrap, self.topics.held, partitions
                )
                self.held.restore(records)
                for lane in due:
                    consumer.seek(self._tp(lane), positions[lane.partition])
        except KAFKA_FAILURES as exc:
            for lane in due:
                await self._fail(consumer, lane, "restore", exc)
            return
        for lane in due:
            lane.position = positions[lane.partition]
            lane.ready = True
            consumer.resume(self._tp(lane))
        log.info(
            "enforcer.partitions_ready",
            extra={"positions": positions, "held": len(self.held)},
        )

    async def _start_producer(self, consumer: AIOKafkaConsumer, lane: Lane) -> bool:
        """Start the lane's transactional producer. Its id names the partition, so this
        fences any earlier owner and ends its open transaction before we read offsets."""
        producer = new_producer(
            self.settings.kafka.bootstrap,
            f"{self.settings.instance}-p{lane.partition}",
            transactional_id=f"{self.group_id}.p{lane.partition}",
            request_timeout_ms=10_000,
            # The commit waits for batches still lingering, so lingering only adds latency;
            # under load batches fill while earlier requests are in flight.
            linger_ms=0,
            # A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS until
            # the markers are written (KAFKA-5477); the default 100 ms backoff would add
            # that much to every commit.
            retry_backoff_ms=10,
            transaction_timeout_ms=max(30_000, 2_000 * self.config.commit_timeout_s),
        )
        lane.producer = producer  # from here on, failing the lane closes it
        try:
            async with asyncio.timeout(self.config.commit_timeout_s):
                await producer.start()
                await producer.begin_transaction()  # returns once the producer id is ours
        except KAFKA_FAILURES as exc:
            await self._fail(consumer, lane, "init", exc)
            return False
        lane.in_transaction = True
        return True

    async def _decide_records(
        self, consumer: AIOKafkaConsumer, lane: Lane, records: list[Any], policy: DirectivePolicy
    ) -> None:
        producer = self._producer(lane)
        for record in records:
            if record.offset < lane.position:
                continue  # fetched before a seek: decided already
            try:
                await self._begin(lane)
                await self._decide(record, policy, producer, lane)
            except KAFKA_FAILURES as exc:
                await self._fail(consumer, lane, "decide", exc)
                return
            lane.position = record.offset + 1
            lane.dirty = True

    async def _begin(self, lane: Lane) -> None:
        if lane.producer is not None and not lane.in_transaction:
            await lane.producer.begin_transaction()
            lane.in_transaction = True

    async def _commit(self, consumer: AIOKafkaConsumer, dirty: list[Lane]) -> None:
        """Commit what ``dirty`` lanes decided: a transaction each, or (at least once) one
        flush and one offset commit for all."""
        dirty = [lane for lane in dirty if lane.ready and lane.dirty]
        shared = self._shared
        if not dirty:
            return
        timer = self.commit_seconds.time()
        if shared is None:
            with timer:
                await asyncio.gather(*(self._commit_lane(consumer, lane) for lane in dirty))
            return
        try:  # at least once: flush the output, then commit the input offsets
            async with asyncio.timeout(self.config.commit_timeout_s):
                with timer:
                    await shared.flush()
                    await consumer.commit({self._tp(lane): lane.position for lane in dirty})
        except KAFKA_FAILURES as exc:
            for lane in dirty:
                await self._fail(consumer, lane, "commit", exc)
            return
        for lane in dirty:
            self._committed(lane)

    async def _commit_lane(self, consumer: AIOKafkaConsumer, lane: Lane) -> None:
        producer = lane.producer
        assert producer is not None
        try:
            async with asyncio.timeout(self.config.commit_timeout_s):
                await producer.send_offsets_to_transaction(
                    {self._tp(lane): lane.position}, self.group_id
                )
                await producer.commit_transaction()
        except KAFKA_FAILURES as exc:
            await self._fail(consumer, lane, "commit", exc)
            return
        lane.in_transaction = False
        self._committed(lane)

    def _committed(self, lane: Lane) -> None:
        lane.settle()
        tally = lane.tally
        for verdict, count in tally.verdicts.items():
            self.decisions.labels(verdict).inc(count)
        for (verdict, rule), count in tally.rules.items():
            self.decision_rules.labels(verdict, rule).inc(count)
        for (destination, kind), count in tally.produced.items():
            self.flow.sent(destination, kind, count)
        now = self.clock()
        for submitted in tally.submitted:
            self.hops.labels("decided").observe(seconds_since(submitted, now))
        tally.clear()
        lane.dirty = False
        lane.failures = 0
        self.transactions.labels("committed").inc()

    async def _fail(
        self, consumer: AIOKafkaConsumer, lane: Lane, stage: str, exc: BaseException
    ) -> None:
        """Abort, close, forget: the lane is set up again from Kafka after a backoff."""
        fenced = lane.settle() or isinstance(exc, FENCING_ERRORS)
        lane.failures += 1
        # Once fenced, aiokafka reports later steps as illegal operations: name the cause.
        self.lane_failures.labels(stage, "ProducerFenced" if fenced else type(exc).__name__).inc()
        if lane.dirty:
            self.transactions.labels("aborted").inc()
        backoff = FENCED_BACKOFF_S if fenced else min(0.2 * 2**lane.failures, 5.0)
        log.error(
            "enforcer.lane_failed",
            extra={
                "partition": lane.partition,
                "stage": stage,
                "error": repr(exc)[:500],
                "fenced": fenced,
                "attempt": lane.failures,
                "retry_in_s": backoff,
            },
        )
        await self._close_lane(lane)
        self.held.drop_partitions({lane.partition})
        lane.reset(asyncio.get_running_loop().time() + backoff)
        tp = self._tp(lane)
        if tp in consumer.assignment():
            consumer.pause(tp)

    async def _close_lane(self, lane: Lane) -> None:
        producer, lane.producer = lane.producer, None
        if producer is None:
            return
        if lane.in_transaction and lane.dirty:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await producer.abort_transaction()
        with contextlib.suppress(Exception):
            await bounded(
                f"lane {lane.partition} producer.stop",
                producer.stop(),
                self.settings.shutdown_timeout_s,
            )

    async def _deny_expired(
        self, consumer: AIOKafkaConsumer, lane: Lane, policy: DirectivePolicy
    ) -> None:
        """Deny the lane's held directives that expired; forget ids whose directives expired."""
        now = self.clock()
        expired = self.held.expired(now, lane.partition)
        forgotten = self.held.expired_seen(now, lane.partition)
        if not (expired or forgotten):
            return
        producer = self._producer(lane)
        try:
            await self._begin(lane)
            for held in expired:
                decision = policy.decide(held.directive, now, held.approvals)
                await self._record(
                    held.directive, decision, now, held, producer=producer, lane=lane
                )
            for directive_id in forgotten:
                key = seen_key(directive_id).encode()
                lane.track(
                    await producer.send(self.topics.held, None, key=key, partition=lane.partition)
                )
                self.held.forget_seen(directive_id)
        except KAFKA_FAILURES as exc:
            await self._fail(consumer, lane, "expire", exc)
            return
        lane.dirty = True

    async def _decide(
        self, record: Any, policy: DirectivePolicy, producer: AIOKafkaProducer, lane: Lane
    ) -> None:
        try:
            if record.value is None:
                raise InvalidEvent("record has no value")
            event = SUBMITTED.decode_event(record.value)
        except InvalidEvent as exc:
            lane.track(await self.dlq.send(record, "enforcer.decode", exc, producer))
            return
        self.flow.received(record.topic, event_type(event))
        now = self.clock()
        if isinstance(event, ApprovalEvent):
            held = self.held.get(event.data.directive_id)
            if held is None:
                reason = f"directive {event.data.directive_id} is not held for approval"
                lane.track(
                    await self.dlq.send(record, "enforcer.approval", InvalidEvent(reason), producer)
                )
                return
            approval = Approval(event.data.approver, event.data.nation, frozenset(event.data.roles))
            held = Held(held.directive, held.approvals | {approval}, held.partition)
            decision = self._evaluate(policy, held.directive, now, held.approvals)
            await self._record(held.directive, decision, now, held, producer=producer, lane=lane)
            return
        if self.held.known(event.id):
            await self._deny_replay(event, policy, now, record, producer=producer, lane=lane)
            return
        held = Held(event, frozenset(), record.partition)
        decision = self._evaluate(policy, event, now)
        await self._record(event, decision, now, held, producer=producer, lane=lane)

    def _evaluate(
        self,
        policy: DirectivePolicy,
        directive: DirectiveEvent,
        now: datetime,
        approvals: frozenset[Approval] = frozenset(),
    ) -> Decision:
        started = time.perf_counter()
        decision = policy.decide(directive, now, approvals)
        self.evaluation_seconds.observe(time.perf_counter() - started)
        return decision

    async def _deny_replay(
        self,
        directive: DirectiveEvent,
        policy: DirectivePolicy,
        now: datetime,
        record: Any,
        *,
        producer: AIOKafkaProducer,
        lane: Lane,
    ) -> None:
        """A directive id already decided (or held) came again: deny the copy, touch nothing."""
        decision = policy.decide(directive, now, replay=True)
        position = f"{record.partition}-{record.offset}"
        await self._write_decision(
            directive, decision, now, producer=producer, lane=lane, replay_of=position
        )
        log.warning(
            "directive.replay_denied",
            extra={
                "directive_id": directive.id,
                "partition": record.partition,
                "offset": record.offset,
            },
        )

    async def _write_decision(
        self,
        directive: DirectiveEvent,
        decision: Decision,
        now: datetime,
        *,
        producer: AIOKafkaProducer,
        lane: Lane,
        approvals: int = 0,
        replay_of: str | None = None,
    ) -> None:
        """The decision (audit trail) and the DECIDED step of the directive's lifecycle."""
        key = directive.id.encode()
        event = decision_event(
            directive, decision, now, self.source, approvals, replay_of=replay_of
        )
        lane.track(await producer.send(self.topics.decisions, encode_event(event), key=key))
        status = decided_status(
            directive, decision, now, self.actor, approvals, replay_of=replay_of
        )
        lane.track(await producer.send(self.topics.status, encode_event(status), key=key))
        verdict = decision.verdict.value
        tally = lane.tally
        tally.verdicts[verdict] += 1
        for rule in {reason.rule for reason in decision.reasons}:
            tally.rules[(verdict, rule)] += 1
        tally.produced[(self.topics.decisions, event_type(event))] += 1
        tally.produced[(self.topics.status, event_type(status))] += 1
        if replay_of is None and decision.verdict is not Verdict.HOLD:
            tally.submitted.append(directive.time)

    async def _record(
        self,
        directive: DirectiveEvent,
        decision: Decision,
        now: datetime,
        held: Held,
        *,
        producer: AIOKafkaProducer,
        lane: Lane,
    ) -> None:
        """Write a decision and its consequences: release, hold, or end a hold."""
        approvals = len(held.approvals)
        await self._write_decision(
            directive, decision, now, producer=producer, lane=lane, approvals=approvals
        )
        key = directive.id.encode()
        if decision.verdict is Verdict.HOLD:
            self.held.put(held)
            lane.track(
                await producer.send(
                    self.topics.held, held.encode(), key=key, partition=held.partition
                )
            )
        else:
            if self.held.pop(directive.id) is not None:
                lane.track(
                    await producer.send(self.topics.held, None, key=key, partition=held.partition)
                )
            # Remember the id until the directive expires: a copy of it is a replay.
            self.held.mark_seen(directive.id, directive.data.expires, held.partition)
            lane.track(
                await producer.send(
                    self.topics.held,
                    encode_seen(directive.data.expires),
                    key=seen_key(directive.id).encode(),
                    partition=held.partition,
                )
            )
        if decision.verdict is Verdict.ALLOW:
            approved = approved_directive(directive)
            lane.track(
                await producer.send(
                    self.topics.approved,
                    encode_event(approved),
                    key=directive.data.target.encode(),
                )
            )
            lane.tally.produced[(self.topics.approved, event_type(approved))] += 1
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


class _LaneListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lanes follow the assignment. Both callbacks take the lanes' lock, so they never run
    while records are being decided. A revoked lane commits what it decided in the current
    window (it still owns the partition until the rebalance completes; if it no longer does,
    its producer has been fenced and the commit fails harmlessly), then closes. New lanes
    start paused and are set up by the pipeline (fence, read offsets and held state, seek,
    resume)."""

    def __init__(self, enforcer: Enforcer, consumer: AIOKafkaConsumer, lanes: Lanes) -> None:
        self.enforcer = enforcer
        self.consumer = consumer
        self.lanes = lanes

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = sorted(tp.partition for tp in revoked)
        async with self.lanes.lock:
            for partition in partitions:
                lane = self.lanes.pop(partition, None)
                if lane is None:
                    continue
                if lane.ready and lane.dirty:
                    await self.enforcer._commit(self.consumer, [lane])
                await self.enforcer._close_lane(lane)
            self.enforcer.held.drop_partitions(set(partitions))
        log.info("enforcer.partitions_revoked", extra={"partitions": partitions})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        partitions = sorted(tp.partition for tp in assigned)
        async with self.lanes.lock:
            for tp in assigned:
                if tp.partition not in self.lanes:
                    self.lanes[tp.partition] = Lane(tp.partition)
                    self.consumer.pause(tp)
        log.info("enforcer.partitions_assigned", extra={"partitions": partitions})


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    await Enforcer(settings).run(stop)
