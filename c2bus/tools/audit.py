"""``c2bus audit verify``: read the decisions topic and check its audit chain and signatures.

Every record of ``<prefix>.decisions`` is checked in offset order per partition (see
:mod:`c2bus.core.audit`): its signature against the trust store, its link against the
record before it. Each record that breaks the chain is named by partition and offset with
what is wrong; the records after it are checked against the last good one, so a forged or
replayed record is named alone. The checkpoints topic is read first: a partition that ends
before its newest signed checkpoint, or holds another record at its sequence number, is
named too (records removed from its end).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from c2bus.adapters.kafka import read_topic
from c2bus.adapters.settings import KafkaSettings
from c2bus.adapters.signing import CHECKPOINTS, DECISIONS, TrustStore
from c2bus.core.audit import Checkpoint, Finding, Head, Verifier, newest_checkpoints

#: how often a long read reports how far it got
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class AuditReport:
    topic: str
    since: datetime | None
    #: records read, by partition
    partitions: dict[int, int]
    heads: dict[int, Head | None]
    findings: list[Finding]
    #: the newest signed checkpoint of each partition
    checkpoints: dict[int, Checkpoint]

    @property
    def records(self) -> int:
        return sum(self.partitions.values())

    @property
    def ok(self) -> bool:
        return not self.findings


async def verify_decisions(
    kafka: KafkaSettings,
    topic: str,
    trust: TrustStore,
    *,
    checkpoints_topic: str,
    since: datetime | None = None,
    progress: Callable[[str], None] = lambda line: None,
    timeout_s: float | None = None,
) -> AuditReport:
    """Check every record of ``topic`` (from ``since``, by Kafka record time, else from each
    partition's beginning) up to its end when called, against the newest checkpoints in
    ``checkpoints_topic`` (read first, from the same time)."""
    since_ms = None if since is None else max(0, int(since.timestamp() * 1000))
    marks = await read_topic(kafka, checkpoints_topic, since_ms=since_ms, timeout_s=timeout_s)
    checkpoints, findings = newest_checkpoints(
        marks.records, functools.partial(trust.check, CHECKPOINTS), checkpoints_topic
    )
    progress(f"{len(marks.records)} checkpoints read from {checkpoints_topic}")
    check = functools.partial(trust.check, DECISIONS)
    # read from its beginning, a partition must begin its chain there (records deleted from
    # its start are named); with --since, the first signed record read anchors it
    verifier = Verifier(check, from_start=since is None, checkpoints=checkpoints)
    clock = {"next": time.monotonic() + PROGRESS_EVERY_S}

    def each(records: list[Any]) -> None:
        for record in records:
            verifier.feed(record.partition, record.offset, record.value, record.headers)
        if time.monotonic() >= clock["next"]:
            clock["next"] = time.monotonic() + PROGRESS_EVERY_S
            progress(f"{verifier.records} records checked, {len(verifier.findings)} bad so far")

    reading = await read_topic(kafka, topic, since_ms=since_ms, each=each, timeout_s=timeout_s)
    verifier.finish(reading.ends)
    partitions = {p: 0 for p in reading.ends} | verifier.partitions
    heads = {p: None for p in reading.ends} | verifier.heads()
    findings += sorted(verifier.findings, key=_order)
    return AuditReport(topic, since, partitions, heads, findings, checkpoints)


def _order(finding: Finding) -> tuple[int, int]:
    return finding.partition, finding.offset


def render(report: AuditReport) -> str:
    """The report for people: one line per partition, then each bad record."""
    where = (
        "from the beginning" if report.since is None else f"since {report.since:%Y-%m-%d %H:%M:%SZ}"
    )
    lines = [
        f"{report.topic}: {report.records} records in {len(report.partitions)} partitions, "
        f"read {where}"
    ]
    for partition, count in sorted(report.partitions.items()):
        head = report.heads.get(partition)
        last = "empty" if head is None else ("unchained" if head.seq < 0 else f"seq {head.seq}")
        bad = sum(1 for f in report.findings if f.partition == partition and f.topic is None)
        checkpoint = report.checkpoints.get(partition)
        vouched = "" if checkpoint is None else f", checkpointed at seq {checkpoint.seq}"
        lines.append(
            f"  partition {partition}: {count} records, chain at {last}{vouched}, {bad} bad"
        )
    lines.extend(f"BAD {finding}" for finding in report.findings)
    if report.ok:
        lines.append(
            "verified: every record is signed by a trusted key, the chains hold and reach "
            "their checkpoints"
        )
    return "\n".join(lines)
