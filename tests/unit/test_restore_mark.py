"""A partition's held state restored from its committed mark is the state restored from the
whole partition, and the state the enforcer had when it committed: whatever the order in
which Kafka reports where records landed, with transactions aborted, and with long-lived
records that the refresh writes again."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from c2bus.core.enforcement import Enforcement, Step, Stream
from c2bus.core.held import HeldDirectives
from tests.unit.test_enforcement import (
    ACTOR,
    NOW,
    SOURCE,
    STARTS,
    ScriptedPolicy,
    approval,
    attested,
    directive,
)

PARTITIONS = (0, 1)


def enforcement(refresh_span: int = 1_000, refresh_limit: int = 500) -> Enforcement:
    core = Enforcement(
        ScriptedPolicy(),
        source=SOURCE,
        actor=ACTOR,
        refresh_span=refresh_span,
        refresh_limit=refresh_limit,
        attest=attested,
    )
    core.restore([], STARTS)
    return core


@dataclass
class Record:
    key: bytes
    value: bytes | None
    partition: int
    offset: int
    committed: bool = False


class Kafka:
    """One held topic's partitions as a log: what a lane writes, what commits, what a
    ``read_committed`` reader gets back."""

    def __init__(self) -> None:
        self.logs: dict[int, list[Record]] = {p: [] for p in PARTITIONS}

    def append(self, partition: int, key: bytes, value: bytes | None) -> Record:
        log = self.logs[partition]
        record = Record(key, value, partition, len(log))
        log.append(record)
        return record

    def read(self, partition: int, start: int = 0) -> list[Record]:
        return [r for r in self.logs[partition][start:] if r.committed]


def state_of(held: HeldDirectives, partition: int) -> tuple[dict[str, Any], dict[str, Any]]:
    by_id = {d: (h.directive.id, h.approvals) for d, h in held.held_in(partition).items()}
    seen = dict(held.seen_in(partition))
    return by_id, seen


def restored(records: list[Record]) -> tuple[dict[str, Any], dict[str, Any]]:
    fresh = HeldDirectives()
    fresh.restore(records)
    return state_of(fresh, records[0].partition) if records else ({}, {})


@pytest.mark.parametrize("seed", range(12))
def test_restoring_from_the_committed_mark_gives_the_committed_state(
    seed: int, valid_example: Any
) -> None:
    rng = random.Random(seed)
    core = enforcement(refresh_span=8, refresh_limit=3)
    kafka = Kafka()
    open_txn: dict[int, list[Record]] = {p: [] for p in PARTITIONS}
    marks = {p: 0 for p in PARTITIONS}
    reports: list[tuple[int, str, int, int]] = []  # deliveries Kafka has yet to report
    now, serial = NOW, 0
    held_ids: list[str] = []

    def write(step: Step, partition: int) -> None:
        for w in step.writes:
            if w.stream is Stream.HELD:
                assert w.partition == partition
                record = kafka.append(partition, w.key, w.value)
                open_txn[partition].append(record)
                generation = core.held.generation(partition)
                reports.append((partition, w.key.decode(), record.offset, generation))

    def commit(partition: int) -> None:
        for record in open_txn[partition]:
            record.committed = True
        open_txn[partition].clear()
        marks[partition] = core.mark(partition)
        check(partition)

    def check(partition: int) -> None:
        expected = state_of(core.held, partition)
        assert restored(kafka.read(partition)) == expected
        assert restored(kafka.read(partition, marks[partition])) == expected

    for _ in range(500):
        partition = rng.choice(PARTITIONS)
        action = rng.random()
        if action < 0.35:  # a directive: held (ENGAGE), or decided at once, long- or short-lived
            serial += 1
            kind = "ENGAGE" if rng.random() < 0.3 else "MOVE"
            life = (
                timedelta(hours=5) if rng.random() < 0.1 else timedelta(seconds=rng.randint(1, 30))
            )
            value = directive(valid_example, f"d-{serial}", kind, now + life)
            write(core.submitted(value, partition, serial, now), partition)
            if kind == "ENGAGE":
                held_ids.append(f"d-{serial}")
        elif action < 0.45 and held_ids:  # an approval, or a copy of an earlier directive
            target = rng.choice(held_ids)
            held = core.held.get(target, partition)
            if held is not None and rng.random() < 0.8:
                value = approval(valid_example, target, rng.choice(("alice", "bob")))
            else:
                value = directive(valid_example, target, "ENGAGE")
            write(core.submitted(value, partition, serial, now), partition)
        elif action < 0.6:  # time passes; the sweep
            now += timedelta(seconds=rng.randint(0, 8))
            write(core.tick(partition, now), partition)
        elif action < 0.8:  # Kafka reports some deliveries, in any order
            rng.shuffle(reports)
            for _ in range(rng.randint(0, len(reports))):
                p, key, offset, generation = reports.pop()
                core.held.located(p, key, offset, generation)
        elif action < 0.93:  # commit: the records become visible, with the mark
            commit(partition)
        else:  # the transaction aborts: the lane drops its state and restores it
            open_txn[partition].clear()
            core.drop({partition})
            core.restore(kafka.read(partition, marks[partition]), STARTS)
            check(partition)
    for partition in PARTITIONS:
        commit(partition)
    assert serial > 100


def test_a_long_lived_record_does_not_hold_the_mark_back(valid_example: Any) -> None:
    """One directive held for hours, thousands decided and expired after it: the refresh
    writes the held one again, so the mark, and a restore, stay near the end."""
    core = enforcement(refresh_span=100, refresh_limit=10)
    kafka = Kafka()
    now = NOW

    def commit(step: Step) -> None:
        for w in step.writes:
            if w.stream is Stream.HELD:
                record = kafka.append(0, w.key, w.value)
                record.committed = True
                core.held.located(0, w.key.decode(), record.offset, core.held.generation(0))

    commit(
        core.submitted(
            directive(valid_example, "pinned", "ENGAGE", now + timedelta(hours=6)), 0, 0, now
        )
    )
    for n in range(1, 2001):
        value = directive(valid_example, f"d-{n}", "MOVE", now + timedelta(seconds=5))
        commit(core.submitted(value, 0, n, now))
        if n % 50 == 0:
            now += timedelta(seconds=10)
            commit(core.tick(0, now))
    assert len(kafka.logs[0]) > 4000  # a seen mark and its tombstone per decided directive
    behind = len(kafka.logs[0]) - core.mark(0)
    assert behind <= 100 + 50 * 2 + 10  # the span, one sweep's worth, a refresh's worth
    state = restored(kafka.read(0, core.mark(0)))
    assert state == state_of(core.held, 0)
    assert "pinned" in state[0]
    rewrites = [r for r in kafka.logs[0] if r.key == b"pinned"]
    assert 1 < len(rewrites) < 40  # written again now and then, not at every sweep
    assert {r.value for r in rewrites} == {rewrites[0].value}  # unchanged


def test_a_late_report_from_an_aborted_transaction_is_ignored(valid_example: Any) -> None:
    core = enforcement()
    kafka = Kafka()
    step = core.submitted(directive(valid_example, "h", "ENGAGE"), 0, 0, NOW)
    (w,) = [w for w in step.writes if w.stream is Stream.HELD]
    kept = kafka.append(0, w.key, w.value)
    kept.committed = True
    core.held.located(0, "h", kept.offset, core.held.generation(0))
    mark = core.mark(0)
    # an approval's record in a transaction that aborts; Kafka reports it after the drop
    generation = core.held.generation(0)
    again = core.submitted(approval(valid_example, "h", "alice"), 0, 1, NOW)
    (w,) = [w for w in again.writes if w.stream is Stream.HELD]
    lost = kafka.append(0, w.key, w.value)
    core.drop({0})
    core.restore(kafka.read(0, mark), STARTS)
    core.held.located(0, "h", lost.offset, generation)
    assert core.mark(0) == kept.offset  # not the aborted record's offset
    assert json.loads(kafka.read(0, core.mark(0))[0].value or b"")["approvals"] == []
