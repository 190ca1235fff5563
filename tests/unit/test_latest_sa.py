"""The latest-SA table: per entity the record read last (Kafka's order, whatever time it
is stamped with), and nothing older than the snapshot horizon."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from c2bus.core.codec import decode_event
from c2bus.services.gateway.state import Latest, LatestSa, sa_key

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def track(valid_example: Any, entity: str, at: datetime) -> Latest:
    doc = valid_example("sa-track")
    doc["data"]["track_id"] = doc["subject"] = entity
    doc["time"] = at.isoformat()
    event = decode_event(json.dumps(doc).encode())
    return Latest(event, event.label, b"frame")


def test_the_record_read_last_stands_and_old_states_fall_out(valid_example: Any) -> None:
    table = LatestSa(timedelta(hours=1))
    first, later_read = track(valid_example, "T1", NOW), track(valid_example, "T1", NOW)
    table.update(sa_key(first.event), first)
    table.update(sa_key(later_read.event), later_read)
    old = track(valid_example, "T2", NOW - timedelta(hours=2))
    table.update(sa_key(old.event), old)
    assert len(table) == 2
    assert list(table.current(NOW)) == [later_read]
    assert len(table) == 1
