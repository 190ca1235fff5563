"""The fault harness: enforcer processes on a three-node cluster, a paced load whose every
directive is known (the oracle), concurrent observers, and the invariant checks.

The oracle is what was actually written to the submitted topic (read back at the end), so
a directive the load generator failed to send cannot be counted as lost by the enforcer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from c2bus.adapters.acls import grant
from c2bus.adapters.kafka import (
    admin_client,
    new_consumer,
    new_producer,
    probe,
    read_to_end,
    start_client,
)
from c2bus.adapters.policy_store import publish
from c2bus.adapters.settings import KafkaSettings, SigningSettings
from c2bus.adapters.signing import DECISIONS as SIGNED_DECISIONS
from c2bus.adapters.signing import trust_for
from c2bus.adapters.topics import TopicNames, create_topics
from c2bus.core.audit import Verifier
from c2bus.core.codec import EventDecoder, encode_event
from c2bus.core.events import DecisionEvent, DirectiveEvent, SubmittedEvent, Verdict
from c2bus.core.policy.compiler import compile_policy, load_policy_document
from c2bus.core.policy.evaluator import PolicyEvaluator
from c2bus.tools.simulator.model import next_directive
from tests.conftest import ROOT
from tests.integration.services import kafka_vars

REFERENCE_POLICY = ROOT / "deploy" / "policies" / "alliance.yaml"
SESSION_TIMEOUT_MS = 6_000  # the enforcers' group session: the broker's minimum
DECISIONS: EventDecoder[DecisionEvent] = EventDecoder(DecisionEvent)
SUBMITTED: EventDecoder[SubmittedEvent] = EventDecoder(SubmittedEvent)
APPROVED: EventDecoder[DirectiveEvent] = EventDecoder(DirectiveEvent)


@dataclass(frozen=True)
class Scale:
    directives: int
    duration_s: float

    @classmethod
    def from_env(cls) -> Scale:
        directives = int(os.environ.get("C2BUS_FAULTS_DIRECTIVES") or 3000)
        duration = float(os.environ.get("C2BUS_FAULTS_DURATION_S") or 40)
        return cls(directives, duration)


def reference_evaluator() -> PolicyEvaluator:
    return PolicyEvaluator(compile_policy(load_policy_document(REFERENCE_POLICY.read_bytes())))


class EnforcerProcess:
    """``python -m c2bus.services.enforcer`` as a child process, with its log in a file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EnforcerProcess:
        env = {**os.environ, **self.env, "C2BUS_INSTANCE": self.name, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "c2bus.services.enforcer"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self, timeout_s: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.proc.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Observer:
    """Reads decisions while the scenario runs, twice: ``read_committed`` (what consumers
    see; any aborted record leaking through would show as a duplicate) and
    ``read_uncommitted`` (to show that aborted transactions really happened)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.committed_ids: Counter[str] = Counter()
        self.uncommitted_records = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.consumers: list[AIOKafkaConsumer] = []
        self.changed = asyncio.Condition()

    @property
    def decided(self) -> int:
        return len(self.committed_ids)

    async def start(self) -> None:
        for isolation in ("read_committed", "read_uncommitted"):
            consumer = new_consumer(
                self.kafka, f"observer-{isolation}", group_id=None, isolation_level=isolation
            )
            await start_client(consumer, self.kafka)
            tps = await partitions_of(self.kafka, self.topic)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self.consumers.append(consumer)
            self.tasks.append(asyncio.create_task(self._read(consumer, isolation)))

    async def _read(self, consumer: AIOKafkaConsumer, isolation: str) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if isolation == "read_committed":
                        self.committed_ids[record.key.decode() + "|" + _id(record.value)] += 1
                    else:
                        self.uncommitted_records += 1
            async with self.changed:
                self.changed.notify_all()

    async def reached(self, decided: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.decided >= decided)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for consumer in self.consumers:
            await consumer.stop()


def _id(value: bytes) -> str:
    return DECISIONS.decode_event(value).id


async def group_lag(kafka: KafkaSettings, group: str, topic: str) -> int | None:
    """Records of ``topic`` the group has not committed yet (None: no commit yet)."""
    committed = await committed_offsets(kafka, group)
    ends = await end_offsets(kafka, topic)
    if not ends or any(tp not in committed for tp, end in ends.items() if end > 0):
        return None
    return sum(end - committed.get(tp, 0) for tp, end in ends.items())


async def partitions_of(kafka: KafkaSettings, topic: str) -> list[TopicPartition]:
    info = await probe(kafka)
    partitions = sorted(info.partitions.get(topic, ()))
    assert partitions, f"topic {topic} has no partitions"
    return [TopicPartition(topic, p) for p in partitions]


async def end_offsets(kafka: KafkaSettings, topic: str) -> dict[TopicPartition, int]:
    """The end offsets (the last stable offsets, for ``read_committed``) of every partition."""
    tps = await partitions_of(kafka, topic)
    consumer = new_consumer(kafka, "end-probe", group_id=None)
    await start_client(consumer, kafka)
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def committed_offsets(kafka: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    async with admin_client(replace(kafka, request_timeout_ms=10_000)) as admin:
        offsets = await admin.list_consumer_group_offsets(group)
    return {tp: meta.offset for tp, meta in offsets.items()}


@dataclass
class Report:
    scenario: str
    directives_in: int = 0
    decisions_out: int = 0
    duplicates: int = 0
    lost: int = 0
    order_violations: int = 0
    wrong_verdicts: int = 0
    approved_not_allowed: int = 0
    allowed_not_approved: int = 0
    concurrent_duplicates: int = 0
    aborted_records: int = 0
    #: decisions records that break their partition's audit chain (c2bus audit verify)
    chain_breaks: int = 0
    recover_s: float = float("nan")
    drain_s: float = float("nan")
    lane_failures: int = 0
    fenced: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        found = [
            f"{name}={value}"
            for name, value in (
                ("duplicates", self.duplicates),
                ("lost", self.lost),
                ("order_violations", self.order_violations),
                ("wrong_verdicts", self.wrong_verdicts),
                ("approved_not_allowed", self.approved_not_allowed),
                ("allowed_not_approved", self.allowed_not_approved),
                ("concurrent_duplicates", self.concurrent_duplicates),
                ("chain_breaks", self.chain_breaks),
            )
            if value
        ]
        if not self.decisions_out == self.directives_in > 0:
            found.append(f"decisions_out={self.decisions_out} != in={self.directives_in}")
        if not self.recover_s <= 60:
            found.append(f"recover_s={self.recover_s:.1f} > 60")
        if not self.drain_s <= 60:
            found.append(f"drain_s={self.drain_s:.1f} > 60")
        return found


class Scenario:
    """One scenario's world: its own topics on the shared cluster, enforcers, load, oracle."""

    def __init__(self, name: str, kafka: KafkaSettings, log_dir: Path, scale: Scale) -> None:
        self.name = name
        self.kafka = kafka
        self.prefix = f"f{name.replace('_', '')[:10]}{random.randrange(16**6):06x}"
        self.topics = TopicNames(self.prefix)
        self.group = f"{self.prefix}.enforcer"
        self.log_dir = log_dir
        self.scale = scale
        self.evaluator = reference_evaluator()
        self.enforcers: list[EnforcerProcess] = []
        self.observer = Observer(kafka, self.topics.decisions)
        self.heal_at: float | None = None
        self.heal_ends: dict[TopicPartition, int] = {}
        self.load_ended_at: float | None = None
        self.recovery: asyncio.Task[float] | None = None
        self.send_failures = 0
        self.env = {
            **kafka_vars(kafka),
            "C2BUS_TOPIC_PREFIX": self.prefix,
            "C2BUS_ENFORCER_PORT": "0",
            "C2BUS_ENFORCER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "C2BUS_SHUTDOWN_TIMEOUT_S": "5",
            "C2BUS_LOG_LEVEL": "INFO",
        }

    def log(self, message: str) -> None:
        print(f"[{self.name} {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def enforcer(self, name: str) -> EnforcerProcess:
        process = EnforcerProcess(f"{self.name}-{name}", self.env, self.log_dir).start()
        self.enforcers.append(process)
        self.log(f"started enforcer {process.name}")
        return process

    async def progress(self, fraction: float, timeout_s: float = 180) -> None:
        """Wait until ``fraction`` of the directives have a committed decision."""
        target = int(self.scale.directives * fraction)
        async with asyncio.timeout(timeout_s):
            await self.observer.reached(target)

    async def healed(self) -> None:
        """The fault is over: remember when and how far the input had got, and start
        timing how long the enforcers take to decide all of that (while the load goes on)."""
        self.heal_at = time.monotonic()
        self.heal_ends = await end_offsets(self.kafka, self.topics.submitted)
        self.recovery = asyncio.create_task(self._recovered(self.heal_at, self.heal_ends))
        self.log(f"healed at {sum(self.heal_ends.values())} directives submitted")

    async def _recovered(self, since: float, ends: dict[TopicPartition, int]) -> float:
        """Seconds from ``since`` until the group has committed up to ``ends`` (nan: not
        within 90 s)."""
        while time.monotonic() < since + 90:
            committed = await committed_offsets(self.kafka, self.group)
            if all(committed.get(tp, 0) >= end for tp, end in ends.items()):
                return time.monotonic() - since
            await asyncio.sleep(0.25)
        return float("nan")

    async def _load(self) -> None:
        producer = new_producer(replace(self.kafka, request_timeout_ms=60_000), f"load-{self.name}")
        await start_client(producer, self.kafka)
        rng = random.Random(self.prefix)
        pending: list[asyncio.Future[Any]] = []
        interval = self.scale.duration_s / self.scale.directives
        started = time.monotonic()
        try:
            for seq in range(self.scale.directives):
                now = datetime.now(UTC)
                directive = next_directive(
                    self.evaluator, rng, now, f"urn:faults:{self.prefix}", seq, hold_ratio=0.0
                )
                pending.append(
                    await producer.send(
                        self.topics.submitted,
                        encode_event(directive),
                        key=directive.data.target.encode(),
                    )
                )
                ahead = started + (seq + 1) * interval - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            results = await asyncio.gather(*pending, return_exceptions=True)
            self.send_failures = sum(isinstance(r, BaseException) for r in results)
        finally:
            await producer.stop()
            self.load_ended_at = time.monotonic()
        self.log(f"load done: {self.scale.directives} sent, {self.send_failures} failed")

    async def run(self, faults: Callable[[Scenario], Awaitable[None]]) -> Report:
        await create_topics(self.kafka, self.prefix)
        await grant(self.kafka, self.prefix)
        doc = load_policy_document(REFERENCE_POLICY.read_bytes())
        await publish(self.kafka, self.topics.policy, doc, None, "urn:faults")
        await self.observer.start()
        try:
            load = asyncio.create_task(self._load())
            await faults(self)
            if self.heal_at is None:
                await self.healed()
            await load
            report = await self._settle()
        finally:
            if self.recovery is not None:
                self.recovery.cancel()
            await self.observer.stop()
            for process in self.enforcers:
                process.stop()
        await self._check(report)
        return report

    async def _settle(self) -> Report:
        """Measure recovery: catching up with the input as it stood at the heal, and the
        lag after the load ended, each within 60 s."""
        report = Report(self.name)
        assert self.recovery is not None and self.load_ended_at is not None
        report.recover_s = await self.recovery
        while time.monotonic() < self.load_ended_at + 90:
            lag = await group_lag(self.kafka, self.group, self.topics.submitted)
            if lag == 0:
                report.drain_s = time.monotonic() - self.load_ended_at
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(1)  # let the concurrent observer read the last commits
        return report

    async def _check(self, report: Report) -> None:
        submitted = await read_to_end(self.kafka, self.topics.submitted)
        decisions = await read_to_end(self.kafka, self.topics.decisions)
        approved = await read_to_end(self.kafka, self.topics.approved)
        directives = {}
        order: dict[str, list[str]] = defaultdict(list)
        for record in submitted:
            event = SUBMITTED.decode_event(record.value)
            assert isinstance(event, DirectiveEvent)
            directives[event.id] = event
            order[event.data.target].append(event.id)
        report.directives_in = len(directives)
        per_directive: Counter[str] = Counter()
        allowed: set[str] = set()
        for record in decisions:
            decision = DECISIONS.decode_event(record.value)
            directive_id = decision.data.directive_id
            per_directive[directive_id] += 1
            if decision.data.verdict is Verdict.ALLOW:
                allowed.add(directive_id)
            directive = directives.get(directive_id)
            if directive is not None:
                expected = self.evaluator.decide(directive, decision.time).verdict
                report.wrong_verdicts += expected is not decision.data.verdict
        report.decisions_out = sum(per_directive.values())
        # every lane set up after a kill, a fence or an abort went on from its partition's
        # committed chain head: the chain holds as `c2bus audit verify` checks it
        chain = Verifier(
            functools.partial(trust_for(SigningSettings.from_env()).check, SIGNED_DECISIONS)
        )
        for record in decisions:
            chain.feed(record.partition, record.offset, record.value, record.headers)
        report.chain_breaks = len(chain.findings)
        report.notes.extend(str(finding) for finding in chain.findings[:5])
        report.duplicates = sum(n - 1 for n in per_directive.values() if n > 1)
        report.lost = sum(1 for d in directives if d not in per_directive)
        approved_ids: Counter[str] = Counter()
        approved_order: dict[str, list[str]] = defaultdict(list)
        for record in approved:
            event = APPROVED.decode_event(record.value)
            approved_ids[event.id] += 1
            approved_order[event.data.target].append(event.id)
        report.duplicates += sum(n - 1 for n in approved_ids.values() if n > 1)
        report.approved_not_allowed = len(set(approved_ids) - allowed)
        report.allowed_not_approved = len(allowed - set(approved_ids))
        for target, ids in order.items():
            expected_order = [i for i in ids if i in approved_ids]
            report.order_violations += sum(
                1 for a, b in zip(expected_order, approved_order[target], strict=False) if a != b
            )
        report.concurrent_duplicates = sum(
            n - 1 for n in self.observer.committed_ids.values() if n > 1
        )
        report.aborted_records = self.observer.uncommitted_records - sum(
            self.observer.committed_ids.values()
        )
        for process in self.enforcers:
            text = process.log_text()
            report.lane_failures += text.count('"event":"enforcer.lane_failed"')
            report.fenced += text.count('"fenced":true')
        if self.send_failures:
            report.notes.append(f"{self.send_failures} sends failed (not in the oracle)")
