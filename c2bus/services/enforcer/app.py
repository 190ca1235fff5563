"""The enforcer: consume submitted directives, decide, write decisions and approvals.

The policy comes from the policy topic (see ``c2bus.adapters.policy_source``); until a valid
version is in force nothing is decided.

Exactly once, per input partition (see ``lanes``, ``pipeline`` and ``docs/exactly-once.md``):
every assigned partition has a lane with its own transactional producer, and a directive is
decided exactly once or not at all. What is decided (hold, release, replay, expiry) is the
pure core's (``c2bus.core.enforcement``); this package feeds it and writes what it returns.
A watchdog restarts the whole pipeline if it stops making progress.

Approvals arrive on the same topic as directives, keyed by the same target unit, so they
share a partition and come in order. A HOLD keeps the directive in the held state (see
``c2bus.core.held``); each approval re-evaluates it; it is released on ALLOW, and denied when
it expires.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from c2bus.adapters.dlq import DeadLetters
from c2bus.adapters.kafka import assign_all, new_consumer, start_clients
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.metrics import export_kafka_refusals
from c2bus.adapters.ops import HttpServer, ops_app
from c2bus.adapters.policy_source import PolicySource
from c2bus.adapters.settings import ServiceSettings
from c2bus.adapters.signing import APPROVALS, DECISIONS, signer_for, trust_for
from c2bus.adapters.topics import TopicNames
from c2bus.adapters.watchdog import Heartbeat, supervise
from c2bus.core.enforcement import Enforcement, Stream
from c2bus.core.held import HeldDirectives
from c2bus.errors import UnverifiedRecord
from c2bus.services.enforcer.lanes import Outputs
from c2bus.services.enforcer.metrics import EnforcerMetrics
from c2bus.services.enforcer.pipeline import Pipeline

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Enforcer:
    def __init__(self, settings: ServiceSettings, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.config = settings.enforcer
        self.clock = clock
        self.topics = TopicNames(settings.kafka.topic_prefix)
        self.actor = f"enforcer:{settings.instance}"
        self.registry = CollectorRegistry()
        export_kafka_refusals(self.registry)
        self.metrics = EnforcerMetrics(self.registry)
        self.policies = PolicySource(settings.policy_set_id, self.registry)
        trust = trust_for(settings.signing)
        self.core = Enforcement(
            None,
            source=f"urn:c2bus:{self.actor}",
            actor=self.actor,
            checkpoint_interval=timedelta(seconds=self.config.checkpoint_interval_s),
            # an approval counts only when an edge trusted to attest approvals signed it
            attest=functools.partial(trust.check, APPROVALS),
        )
        self.metrics.held.set_function(lambda: len(self.core.held))
        self.metrics.partitions.set_function(
            lambda: self.pipeline.ready_partitions() if self.pipeline else 0
        )
        topics = self.topics
        dlq = DeadLetters(None, topics.dlq, settings.instance, self.registry)
        dlq.expect("enforcer.approval", UnverifiedRecord)
        self.outputs = Outputs(
            {
                Stream.DECISIONS: topics.decisions,
                Stream.STATUS: topics.status,
                Stream.APPROVED: topics.approved,
                Stream.HELD: topics.held,
                Stream.CHECKPOINTS: topics.checkpoints,
            },
            dlq,
            self.core.held,
            signer_for(settings.signing, "enforcer"),
            functools.partial(trust.check, DECISIONS),
        )
        self.pipeline: Pipeline | None = None
        self.http = HttpServer(
            ops_app("c2bus enforcer", self.registry, lambda: self.ready),
            settings.host,
            settings.port,
            settings.http_head_timeout_s,
        )

    @property
    def ready(self) -> bool:
        return self.pipeline is not None and self.pipeline.ready

    @property
    def held(self) -> HeldDirectives:
        """The held directives and seen ids of the partitions this enforcer owns."""
        return self.core.held

    async def run(self, stop: asyncio.Event) -> None:
        kafka = self.settings.kafka
        policy_consumer = new_consumer(kafka, f"{self.settings.instance}-policy", group_id=None)
        self.http.bind()
        await start_clients(kafka, policy_consumer)
        try:
            await assign_all(policy_consumer, kafka, [self.topics.policy], from_start=True)
        except BaseException:
            await policy_consumer.stop()
            raise
        log.info(
            "enforcer.started",
            extra={
                "group_id": f"{self.settings.kafka.topic_prefix}.enforcer",
                "port": self.http.port,
                "exactly_once": self.config.exactly_once,
                "commit_interval_ms": self.config.commit_interval_ms,
            },
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.http.serve())
            tasks.create_task(
                self.metrics.lag.follow(lambda: self.pipeline and self.pipeline.consumer, stop)
            )
            follower = tasks.create_task(self._follow_policy(policy_consumer, stop))
            try:
                if await self._wait_for_policy(stop):
                    await supervise(
                        "enforcer.pipeline",
                        lambda beat: self._pipeline(beat, stop),
                        stop,
                        stall_s=self.config.watchdog_s,
                        restarts=self.metrics.restarts,
                    )
            finally:
                follower.cancel()
                timeout = self.settings.shutdown_timeout_s
                await bounded("policy_consumer.stop", policy_consumer.stop(), timeout)
                self.http.stop()

    async def _pipeline(self, beat: Heartbeat, stop: asyncio.Event) -> None:
        self.pipeline = Pipeline(
            self.settings,
            core=self.core,
            policies=self.policies,
            metrics=self.metrics,
            topics=self.topics,
            outputs=self.outputs,
            clock=self.clock,
        )
        await self.pipeline.run(beat, stop)

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


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    await Enforcer(settings).run(stop)
