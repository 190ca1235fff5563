"""The c2bus topics (DESIGN §3): names under one prefix, their layout, and idempotent creation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.protocol.metadata import MetadataRequest

from c2bus.adapters.kafka import admin_client, bootstrap, client_options, probe
from c2bus.adapters.settings import KafkaSettings
from c2bus.errors import TopicError

DAY_MS = 24 * 60 * 60 * 1000
TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic's role (the name after the prefix), layout and configuration."""

    role: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def name(self, prefix: str) -> str:
        return f"{prefix}.{self.role}"


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "sa",
        12,
        {"cleanup.policy": "delete", "retention.ms": str(1 * DAY_MS)},
        "situational-awareness events, keyed by track/entity id",
    ),
    TopicSpec(
        "directives.submitted",
        6,
        {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
        "directives as issued, keyed by target unit id",
    ),
    TopicSpec(
        "directives.approved",
        6,
        {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
        "directives that passed policy, keyed by target unit id (read_committed)",
    ),
    TopicSpec(
        "decisions",
        6,
        {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
        "every verdict with its reasons, keyed by directive id: the audit trail, kept forever",
    ),
    TopicSpec(
        "audit.checkpoints",
        1,
        {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
        "signed checkpoints of each decisions partition's audit chain, kept forever",
    ),
    TopicSpec(
        "directives.status",
        6,
        {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
        "directive lifecycle (decided, delivered, WILCO, CANTCO, HAVE DO), keyed by directive id",
    ),
    TopicSpec(
        "directives.held",
        6,  # must equal directives.submitted: partition i holds the state of input partition i
        {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"},
        "enforcer state: held directives, and decided ids until they expire (replay check)",
    ),
    TopicSpec(
        "policy",
        1,
        {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"},
        "versioned alignment-policy sets, keyed by policy set id (compacted)",
    ),
    TopicSpec(
        "policy.history",
        1,
        {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
        "every published policy version, kept forever: the policy audit trail",
    ),
    TopicSpec(
        "dlq",
        3,
        {"cleanup.policy": "delete", "retention.ms": str(14 * DAY_MS)},
        "rejected input with its original bytes and error headers, keyed by original key",
    ),
)


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Concrete topic names for one prefix (``c2`` gives ``c2.sa``, ``c2.dlq``…)."""

    prefix: str

    @property
    def sa(self) -> str:
        return f"{self.prefix}.sa"

    @property
    def submitted(self) -> str:
        return f"{self.prefix}.directives.submitted"

    @property
    def approved(self) -> str:
        return f"{self.prefix}.directives.approved"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}.decisions"

    @property
    def checkpoints(self) -> str:
        return f"{self.prefix}.audit.checkpoints"

    @property
    def status(self) -> str:
        return f"{self.prefix}.directives.status"

    @property
    def held(self) -> str:
        return f"{self.prefix}.directives.held"

    @property
    def policy(self) -> str:
        return f"{self.prefix}.policy"

    @property
    def policy_history(self) -> str:
        return f"{self.prefix}.policy.history"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    def all(self) -> tuple[str, ...]:
        return tuple(spec.name(self.prefix) for spec in TOPICS)


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    name: str
    created: bool
    partitions: int
    replication: int


async def create_topics(
    kafka: KafkaSettings,
    prefix: str,
    replication: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[TopicOutcome]:
    """Create every missing c2bus topic; existing ones are left as they are.

    ``replication`` defaults to min(3, brokers); ``min.insync.replicas`` is 2 when the
    replication factor is 3 or more (so ``acks=all`` survives one broker down), else 1.
    """
    timeout_ms = kafka.request_timeout_ms
    info = await probe(kafka)
    brokers = len(info.broker_ids)
    rf = replication if replication is not None else min(3, brokers)
    if rf < 1 or rf > brokers:
        raise TopicError(
            f"replication factor {rf} is impossible with {brokers} broker(s): "
            f"use --replication-factor between 1 and {brokers}"
        )
    min_isr = "2" if rf >= 3 else "1"
    wanted = {spec.name(prefix): spec for spec in TOPICS}
    missing = [name for name in wanted if name not in info.topics]
    outcomes: list[TopicOutcome] = []
    async with admin_client(kafka) as admin:
        if missing:
            new = [
                NewTopic(
                    name,
                    wanted[name].partitions,
                    rf,
                    topic_configs={**wanted[name].config, "min.insync.replicas": min_isr},
                )
                for name in missing
            ]
            try:
                response = await admin.create_topics(new, timeout_ms=timeout_ms)
            except AioKafkaError as exc:
                raise TopicError(f"creating topics failed: {exc}") from exc
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                message = entry[2] if len(entry) > 2 else ""
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    raise TopicError(f"creating topic {name} failed (error {code}): {message}")
        # New topics must show every partition; existing ones keep the layout they have.
        expected = {name: (wanted[name].partitions if name in missing else 1) for name in wanted}
        layout = await _wait_until_ready(kafka, expected)
    for name in wanted:
        partitions = layout[name]["partitions"]
        replicas = len(partitions[0]["replicas"]) if partitions else 0
        outcome = TopicOutcome(name, name in missing, len(partitions), replicas)
        outcomes.append(outcome)
        if progress:
            state = "created" if outcome.created else "exists "
            progress(f"{state} {name} ({outcome.partitions} partition(s), replication {replicas})")
    return outcomes


def _ready(entry: dict[str, Any], partitions: int) -> bool:
    parts = entry.get("partitions", [])
    return (
        entry.get("error_code") == 0
        and len(parts) >= partitions
        and all(p.get("error_code") == 0 and p.get("leader", -1) >= 0 for p in parts)
    )


async def _wait_until_ready(
    kafka: KafkaSettings, expected: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """Poll every broker's metadata until each shows every topic with its expected
    partitions, each with a leader.

    Creation returns once the controller has committed it; brokers learn of new topics a
    moment later, each at its own pace. Returning only when all of them show the topics
    means a client started right after ``topics create`` finds its topic on whichever
    broker it asks.
    """
    client = AIOKafkaClient(**client_options(kafka))
    deadline = time.monotonic() + kafka.request_timeout_s
    try:
        await bootstrap(client)
        request = MetadataRequest(list(expected), allow_auto_topic_creation=False)
        while True:
            pending: set[str] = set()
            layout: dict[str, dict[str, Any]] = {}
            try:
                for broker in client.cluster.brokers():
                    response = await client.send(broker.nodeId, request)
                    layout = {t["topic"]: t for t in response.to_object()["topics"]}
                    pending |= {
                        name
                        for name, partitions in expected.items()
                        if not _ready(layout.get(name, {}), partitions)
                    }
            except AioKafkaError as exc:
                pending.add(f"(metadata request failed: {exc})")
            if not pending:
                return layout
            if time.monotonic() >= deadline:
                raise TopicError(
                    f"topics not ready after {kafka.request_timeout_s:g}s (no leader for every "
                    f"partition on every broker): {', '.join(sorted(pending))}"
                )
            await asyncio.sleep(0.2)
    finally:
        await client.close()
