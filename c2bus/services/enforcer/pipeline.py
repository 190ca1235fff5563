"""The enforcer's pipeline: one group consumer, a lane per assigned partition, commit windows.

Records are decided in commit windows of ``C2BUS_ENFORCER_COMMIT_INTERVAL_MS``; the decision
core (:mod:`c2bus.core.enforcement`) decides each input, and the record's lane writes what it
returns in the lane's transaction. At the end of a window each lane commits one transaction
holding its decisions, DECIDED status events, approved directives, changes to held
directives, dead letters and its input offset.

Failure of any step of a lane (fenced, out-of-order sequence, a coordinator that moved, a
timeout), each a :class:`~c2bus.errors.KafkaError`, fails that lane alone: its transaction
is aborted, its producer closed, its state in the core dropped; after a backoff it is set up
again from what Kafka committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from c2bus.adapters.kafka import (
    kafka_step,
    new_consumer,
    new_producer,
    start_clients,
)
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.policy_source import PolicySource
from c2bus.adapters.settings import ServiceSettings
from c2bus.adapters.topics import TopicNames
from c2bus.adapters.watchdog import Heartbeat
from c2bus.core.decision import DirectivePolicy
from c2bus.core.enforcement import Decided, Enforcement, Step
from c2bus.errors import KafkaError
from c2bus.services.enforcer.lanes import Lane, Lanes, Outputs
from c2bus.services.enforcer.metrics import EnforcerMetrics, TimedPolicy
from c2bus.services.enforcer.restore import committed, read_heads, read_held, with_mark

log = logging.getLogger(__name__)
EXPIRY_SWEEP_S = 1.0
MAX_RECORDS = 1000
#: after being fenced, wait for the rebalance that will likely take the partition away
FENCED_BACKOFF_S = 5.0


class Pipeline:
    """One run of the pipeline; the watchdog starts a new one if it stops beating."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        core: Enforcement,
        policies: PolicySource,
        metrics: EnforcerMetrics,
        topics: TopicNames,
        outputs: Outputs,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.config = settings.enforcer
        self.core = core
        self.policies = policies
        self.metrics = metrics
        self.outputs = outputs
        self.clock = clock
        self.input_topic = topics.submitted
        self.held_topic = topics.held
        self.decisions_topic = topics.decisions
        self.group_id = f"{settings.kafka.topic_prefix}.enforcer"
        self.lanes = Lanes()
        self.consumer: AIOKafkaConsumer | None = None
        self._shared: AIOKafkaProducer | None = None
        self._in_force: DirectivePolicy | None = None
        self._next_sweep = 0.0
        self.ready = False

    async def run(self, beat: Heartbeat, stop: asyncio.Event) -> None:
        kafka = self.settings.kafka
        consumer = new_consumer(
            kafka,
            self.settings.instance,
            group_id=self.group_id,
            session_timeout_ms=self.config.session_timeout_ms,
        )
        exactly_once = self.config.exactly_once
        shared = None if exactly_once else new_producer(kafka, self.settings.instance)
        self._shared = shared
        await start_clients(kafka, *([shared] if shared else []), consumer)
        self.consumer = consumer
        try:
            consumer.subscribe([self.input_topic], listener=_LaneListener(self, consumer))
            self.ready = True
            while not stop.is_set():
                await self._window(consumer)
                beat.beat()
        finally:
            self.ready = False
            self.consumer = None
            timeout = self.settings.shutdown_timeout_s
            await bounded("consumer.stop", consumer.stop(), timeout)
            for lane in list(self.lanes.values()):
                await lane.close(timeout)
            self.lanes.clear()
            if shared is not None:
                await bounded("producer.stop", shared.stop(), timeout)

    def ready_partitions(self) -> int:
        return sum(lane.ready for lane in self.lanes.values())

    # -- one commit window ---------------------------------------------------------------------

    async def _window(self, consumer: AIOKafkaConsumer) -> None:
        """Set up lanes that need it, decide for one commit interval, then commit.

        The lanes' lock is held while deciding and committing but never across ``getmany``,
        which waits for a rebalance to finish, and a rebalance needs the lock.
        """
        lanes = self.lanes
        loop = asyncio.get_running_loop()
        async with lanes.lock:
            await self._set_up(consumer)
        deadline = loop.time() + self.config.commit_interval_ms / 1000
        while (remaining := deadline - loop.time()) > 0:
            with kafka_step("fetch"):
                batch = await consumer.getmany(
                    timeout_ms=max(1, int(remaining * 1000)), max_records=MAX_RECORDS
                )
            # The version in force when the batch arrived decides all of it: a swap falls
            # between two batches, never inside one, and never waits for the window's end
            # (a directive sent after a new version is in force is decided by it).
            self._switch_policy()
            async with lanes.lock:
                for tp, records in batch.items():
                    lane = lanes.get(tp.partition)
                    if lane is not None and lane.ready:
                        await self._decide_records(consumer, lane, records)
        self._switch_policy()
        async with lanes.lock:
            if loop.time() >= self._next_sweep:
                self._next_sweep = loop.time() + EXPIRY_SWEEP_S
                for lane in list(lanes.values()):
                    if lane.ready:
                        await self._expire(consumer, lane)
            await self.commit(consumer, [lane for lane in lanes.values() if lane.dirty])

    def _switch_policy(self) -> None:
        policy = self.policies.current
        if policy is not None and policy is not self._in_force:
            self._in_force = policy
            self.core.switch(TimedPolicy(policy, self.metrics.evaluation_seconds))

    def _tp(self, lane: Lane) -> TopicPartition:
        return TopicPartition(self.input_topic, lane.partition)

    def _producer(self, lane: Lane) -> AIOKafkaProducer:
        """The lane's own transactional producer, or (at least once) the shared one."""
        producer = lane.producer or self._shared
        assert producer is not None
        return producer

    async def _set_up(self, consumer: AIOKafkaConsumer) -> None:
        """Make due lanes ready: fence earlier owners, then read what they committed."""
        now = asyncio.get_running_loop().time()
        due = [lane for lane in self.lanes.values() if not lane.ready and lane.retry_at <= now]
        if not due:
            return
        if self.config.exactly_once:
            started = await asyncio.gather(*(self._start(consumer, lane) for lane in due))
            due = [lane for lane, ok in zip(due, started, strict=True) if ok]
            if not due:
                return
        partitions = [lane.partition for lane in due]
        try:
            with kafka_step("restore"):
                async with asyncio.timeout(self.config.commit_timeout_s):
                    tps = [self._tp(lane) for lane in due]
                    found = await committed(self.settings.kafka, self.group_id, tps)
                    positions: dict[int, int] = {}
                    marks: dict[int, int] = {}
                    uncommitted: set[int] = set()
                    for tp in tps:
                        entry = found.get(tp.partition)
                        if entry is None:
                            uncommitted.add(tp.partition)
                            positions[tp.partition] = (await consumer.beginning_offsets([tp]))[tp]
                            continue
                        positions[tp.partition] = entry.offset
                        if entry.mark is not None:
                            marks[tp.partition] = entry.mark
                    self.core.drop(set(partitions))
                    kafka = self.settings.kafka
                    held = await read_held(kafka, self.held_topic, partitions, marks)
                    _check_committed(uncommitted, held.records)
                    heads = await read_heads(
                        kafka, self.decisions_topic, partitions, self.outputs.trusted
                    )
                    self.core.restore(held.records, heads)
                    for lane in due:
                        consumer.seek(self._tp(lane), positions[lane.partition])
        except KafkaError as exc:
            for lane in due:
                await self._fail(consumer, lane, "restore", exc)
            return
        for lane in due:
            lane.position = positions[lane.partition]
            lane.ready = True
            consumer.resume(self._tp(lane))
        log.info(
            "enforcer.partitions_ready",
            extra={
                "positions": positions,
                "held": len(self.core.held),
                "held_from": marks,
                "held_records_read": len(held.records),
            },
        )

    async def _start(self, consumer: AIOKafkaConsumer, lane: Lane) -> bool:
        try:
            await lane.start(
                self.settings.kafka,
                f"{self.settings.instance}-p{lane.partition}",
                f"{self.group_id}.p{lane.partition}",
                self.config.commit_timeout_s,
            )
        except KafkaError as exc:
            await self._fail(consumer, lane, "init", exc)
            return False
        return True

    async def _decide_records(
        self, consumer: AIOKafkaConsumer, lane: Lane, records: list[Any]
    ) -> None:
        """Decide a fetched batch of the lane's records, then write what they decided
        together (one signature over the batch's records)."""
        steps: list[tuple[Step, Any]] = []
        for record in records:
            if record.offset < lane.position:
                continue  # fetched before a seek: decided already
            step = self.core.submitted(
                record.value, record.partition, record.offset, self.clock(), record.headers
            )
            if step.received is not None:
                self.metrics.flow.received(record.topic, step.received)
            steps.append((step, record))
        if not steps:
            return
        try:
            await lane.write(steps, self._producer(lane), self.outputs)
        except KafkaError as exc:
            await self._fail(consumer, lane, "decide", exc)
            return
        lane.position = steps[-1][1].offset + 1
        for step, record in steps:
            _log(step, record)

    async def _expire(self, consumer: AIOKafkaConsumer, lane: Lane) -> None:
        """Deny the lane's held directives that expired; forget ids whose directives expired;
        commit the restore mark where it moved on since the last commit (a quiet lane's
        last transaction carried a mark from before its records were acknowledged)."""
        step = self.core.tick(lane.partition, self.clock())
        try:
            if step:
                await lane.write([(step, None)], self._producer(lane), self.outputs)
            elif self.core.mark(lane.partition) != lane.committed_mark:
                await lane.touch()
        except KafkaError as exc:
            await self._fail(consumer, lane, "expire", exc)
            return
        if step:
            _log(step, None)

    # -- commit and failure ------------------------------------------------------------------

    async def commit(self, consumer: AIOKafkaConsumer, dirty: list[Lane]) -> None:
        """Commit what ``dirty`` lanes decided: a transaction each, or (at least once) one
        flush and one offset commit for all."""
        dirty = [lane for lane in dirty if lane.ready and lane.dirty]
        shared = self._shared
        if not dirty:
            return
        timer = self.metrics.commit_seconds.time()
        if shared is None:
            with timer:
                await asyncio.gather(*(self._commit_lane(consumer, lane) for lane in dirty))
            return
        try:  # at least once: flush the output, then commit the input offsets
            with kafka_step("commit"):
                async with asyncio.timeout(self.config.commit_timeout_s):
                    with timer:
                        await shared.flush()
                        await consumer.commit(
                            {self._tp(lane): self._offset(lane) for lane in dirty}
                        )
        except KafkaError as exc:
            for lane in dirty:
                await self._fail(consumer, lane, "commit", exc)
            return
        for lane in dirty:
            self._committed(lane)

    async def _commit_lane(self, consumer: AIOKafkaConsumer, lane: Lane) -> None:
        try:
            await lane.commit(
                {self._tp(lane): self._offset(lane)}, self.group_id, self.config.commit_timeout_s
            )
        except KafkaError as exc:
            await self._fail(consumer, lane, "commit", exc)
            return
        self._committed(lane)

    def _offset(self, lane: Lane) -> OffsetAndMetadata:
        """The lane's input offset, with its held partition's restore mark as of now."""
        lane.committing_mark = self.core.mark(lane.partition)
        return with_mark(lane.position, lane.committing_mark)

    def _committed(self, lane: Lane) -> None:
        lane.committed_mark = lane.committing_mark
        lane.settle()
        self.metrics.committed(lane.tally, self.clock())
        lane.tally.clear()
        lane.dirty = False
        lane.failures = 0

    async def _fail(
        self, consumer: AIOKafkaConsumer, lane: Lane, stage: str, exc: KafkaError
    ) -> None:
        """Abort, close, forget: the lane is set up again from Kafka after a backoff."""
        fenced = lane.settle() or exc.fenced
        lane.failures += 1
        # Once fenced, aiokafka reports later steps as illegal operations: name the cause.
        self.metrics.lane_failures.labels(stage, "ProducerFenced" if fenced else exc.cause).inc()
        if lane.dirty:
            self.metrics.transactions.labels("aborted").inc()
        backoff = FENCED_BACKOFF_S if fenced else min(0.2 * 2**lane.failures, 5.0)
        log.error(
            "enforcer.lane_failed",
            extra={
                "partition": lane.partition,
                "stage": stage,
                "error": str(exc)[:500],
                "fenced": fenced,
                "attempt": lane.failures,
                "retry_in_s": backoff,
            },
        )
        await lane.close(self.settings.shutdown_timeout_s)
        self.core.drop({lane.partition})
        lane.reset(asyncio.get_running_loop().time() + backoff)
        tp = self._tp(lane)
        if tp in consumer.assignment():
            consumer.pause(tp)


def _check_committed(uncommitted: set[int], held_records: list[Any]) -> None:
    """Fail closed when Kafka says a partition has no committed offset although its held
    state shows directives were decided there: every decision's transaction commits the
    input offset with it, so the answer is wrong (a group coordinator just back from an
    outage answered "no offset"), and starting from the beginning would decide them all
    again. The lane is failed and set up again after its backoff."""
    decided_in = uncommitted & {record.partition for record in held_records}
    if decided_in:
        raise KafkaError(
            f"no committed offset for input partitions {sorted(decided_in)}, whose held state "
            "shows decisions: not starting them from the beginning",
            retriable=True,
            cause="NoCommittedOffset",
        )


def _log(step: Step, record: Any) -> None:
    """Per directive at DEBUG only (the audit trail is the decisions topic); replays always."""
    for decided in step.decided:
        if decided.replay_of is not None:
            log.warning(
                "directive.replay_denied",
                extra={"directive_id": decided.directive.id, "position": decided.replay_of},
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("directive.decided", extra=_decided_fields(decided))


def _decided_fields(decided: Decided) -> dict[str, object]:
    data = decided.directive.data
    return {
        "directive_id": decided.directive.id,
        "verdict": decided.decision.verdict.value,
        "issuer": data.issuer,
        "target": data.target,
        "rules": [r.rule for r in decided.decision.reasons],
        "approvals": decided.approvals,
        "policy_version": decided.decision.policy_version,
    }


class _LaneListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lanes follow the assignment. Both callbacks take the lanes' lock, so they never run
    while records are being decided. A revoked lane commits what it decided in the current
    window (it still owns the partition until the rebalance completes; if it no longer does,
    its producer has been fenced and the commit fails harmlessly), then closes. New lanes
    start paused and are set up by the pipeline (fence, read offsets and held state, seek,
    resume)."""

    def __init__(self, pipeline: Pipeline, consumer: AIOKafkaConsumer) -> None:
        self.pipeline = pipeline
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pipeline, lanes = self.pipeline, self.pipeline.lanes
        partitions = sorted(tp.partition for tp in revoked)
        async with lanes.lock:
            for partition in partitions:
                lane = lanes.pop(partition, None)
                if lane is None:
                    continue
                if lane.ready and lane.dirty:
                    await pipeline.commit(self.consumer, [lane])
                await lane.close(pipeline.settings.shutdown_timeout_s)
            pipeline.core.drop(set(partitions))
        log.info("enforcer.partitions_revoked", extra={"partitions": partitions})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        lanes = self.pipeline.lanes
        partitions = sorted(tp.partition for tp in assigned)
        async with lanes.lock:
            for tp in assigned:
                if tp.partition not in lanes:
                    lanes[tp.partition] = Lane(tp.partition)
                    self.consumer.pause(tp)
        log.info("enforcer.partitions_assigned", extra={"partitions": partitions})
