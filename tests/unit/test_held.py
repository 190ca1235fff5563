"""The enforcer's held-directive state folds its changelog like a compacted topic would."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from c2bus.core.codec import decode_event
from c2bus.core.decision import Approval
from c2bus.core.events import DirectiveEvent
from c2bus.core.held import Held, HeldDirectives, encode_seen, seen_key


@dataclass
class Record:
    key: bytes
    value: bytes | None
    partition: int
    offset: int = -1


def at_offsets(*records: Record) -> list[Record]:
    """``records`` as one partition's log gives them back: consecutive offsets each."""
    ends: dict[int, int] = {}
    for record in records:
        record.offset = ends.get(record.partition, 0)
        ends[record.partition] = record.offset + 1
    return list(records)


def directive(directive_id: str, expires: datetime, valid_example: Any) -> DirectiveEvent:
    doc = valid_example("directive")
    doc["id"] = directive_id
    doc["data"]["expires"] = expires.isoformat()
    event = decode_event(json.dumps(doc))
    assert isinstance(event, DirectiveEvent)
    return event


def test_restore_folds_updates_and_tombstones(valid_example: Any) -> None:
    now = datetime(2026, 11, 26, 8, tzinfo=UTC)
    a = Held(directive("a", now + timedelta(hours=1), valid_example), frozenset(), 0)
    alice = Approval("alice", "GBR", frozenset({"approver"}))
    a2 = Held(a.directive, frozenset({alice}), 0)
    b = Held(directive("b", now - timedelta(seconds=1), valid_example), frozenset(), 1)
    state = HeldDirectives()
    count = state.restore(
        at_offsets(
            Record(b"a", a.encode(), 0),
            Record(b"b", b.encode(), 1),
            Record(b"a", a2.encode(), 0),
            Record(b"c", Held(directive("c", now, valid_example), frozenset(), 1).encode(), 1),
            Record(b"c", None, 1),
        )
    )
    assert count == 2
    assert state.get("a") == a2  # the latest value wins, approvals and all
    assert state.get("c") is None  # tombstoned
    assert [h.directive.id for h in state.expired(now, 1)] == ["b"]
    assert state.expired(now, 0) == []  # each partition sweeps its own
    dropped = state.drop_partitions({1})
    assert set(dropped) == {"b"}
    assert len(state) == 1


def test_seen_markers_remember_decided_ids_until_they_expire(valid_example: Any) -> None:
    now = datetime(2026, 11, 26, 8, tzinfo=UTC)
    state = HeldDirectives()
    state.restore(
        at_offsets(
            Record(seen_key("old").encode(), encode_seen(now - timedelta(minutes=1)), 2),
            Record(seen_key("live").encode(), encode_seen(now + timedelta(hours=1)), 2),
            Record(seen_key("gone").encode(), encode_seen(now + timedelta(hours=1)), 3),
            Record(seen_key("gone").encode(), None, 3),
        )
    )
    assert state.known("live") and state.known("old")
    assert not state.known("gone")
    assert state.expired_seen(now, 2) == ["old"]
    assert state.expired_seen(now, 3) == []
    state.forget_seen("old", 2)
    assert not state.known("old")
    state.drop_partitions({2})
    assert not state.known("live")
    assert len(state) == 0  # seen markers are not held directives


def test_the_mark_is_the_oldest_record_in_force(valid_example: Any) -> None:
    now = datetime(2026, 11, 26, 8, tzinfo=UTC)
    state = HeldDirectives()
    assert state.mark(0) == 0  # nothing written: from the beginning
    state.restore(
        at_offsets(
            Record(b"a", Held(directive("a", now, valid_example), frozenset(), 0).encode(), 0),
            Record(seen_key("b").encode(), encode_seen(now), 0),
            Record(b"a", None, 0),
        )
    )
    assert state.mark(0) == 1  # "a" ended; the seen mark of "b" is the oldest in force
    state.forget_seen("b", 0)
    assert state.mark(0) == 3  # nothing in force: after the end
    # A record written many times: superseded positions are dropped as the heap grows.
    state.mark_seen("c", now, 0)
    for offset in range(3, 3000):
        state.located(0, seen_key("c"), offset, state.generation(0))
    assert state.mark(0) == 2999
    assert state.stale(0, span=10, limit=5) == []  # all in force is at the end
