"""A gateway delivers an approved directive only as the release itself: not expired, decided
within its replay horizon, and not a copy of a release it read at another position."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from c2bus.core.codec import decode_event
from c2bus.core.directives import approved_directive, stale_release
from c2bus.core.events import SA_CLOCK_SKEW, DirectiveEvent
from c2bus.services.gateway.state import DirectiveDirectory

NOW = datetime(2026, 12, 2, 9, tzinfo=UTC)
HORIZON = timedelta(hours=1)


def release(valid_example: Any, directive_id: str, decided: datetime) -> DirectiveEvent:
    doc = valid_example("directive")
    doc["id"] = directive_id
    doc["data"]["expires"] = (NOW + timedelta(hours=2)).isoformat()
    directive = decode_event(msgspec.json.encode(doc))
    assert isinstance(directive, DirectiveEvent)
    return approved_directive(directive, decided)


def test_a_fresh_release_may_be_delivered(valid_example: Any) -> None:
    event = release(valid_example, "d", NOW - timedelta(minutes=5))
    assert event.decidedat == NOW - timedelta(minutes=5) and event.decisionid == "decision:d"
    assert stale_release(event, NOW, HORIZON, SA_CLOCK_SKEW) is None


@pytest.mark.parametrize(
    ("change", "starts"),
    [
        ({"decidedat": None}, "not a release"),
        ({"decisionid": None}, "not a release"),
        ({"decidedat": NOW - HORIZON + timedelta(seconds=10)}, "stale: decided at"),
        ({"decidedat": NOW + timedelta(minutes=5)}, "decided at"),
    ],
)
def test_what_is_not_a_fresh_release_is_refused(
    valid_example: Any, change: dict[str, Any], starts: str
) -> None:
    event = msgspec.structs.replace(release(valid_example, "d", NOW), **change)
    why = stale_release(event, NOW, HORIZON, SA_CLOCK_SKEW)
    assert why is not None and why.startswith(starts), why


def test_an_expired_release_is_stale(valid_example: Any) -> None:
    event = release(valid_example, "d", NOW - timedelta(minutes=1))
    later = event.data.expires + timedelta(seconds=1)
    why = stale_release(event, later, timedelta(days=1), SA_CLOCK_SKEW)
    assert why is not None and why.startswith("stale: expired at")


def test_a_copy_of_a_release_is_a_replay_and_the_release_read_again_is_not(
    valid_example: Any,
) -> None:
    directory = DirectiveDirectory(capacity=2)
    first = release(valid_example, "d-1", NOW - timedelta(minutes=3))
    assert directory.replay_of(first, "c2.directives.approved/0/7") is None
    directory.add(first, 1.0, "c2.directives.approved/0/7")
    assert directory.replay_of(first, "c2.directives.approved/0/7") is None  # read again
    assert directory.replay_of(first, "c2.directives.approved/0/9") == (
        "replay: directive d-1 was released at c2.directives.approved/0/7"
    )
    # once releases are forgotten, one decided before the newest forgotten is refused
    directory.add(release(valid_example, "d-2", NOW - timedelta(minutes=2)), 2.0, "p/0/8")
    directory.add(release(valid_example, "d-3", NOW - timedelta(minutes=1)), 3.0, "p/0/10")
    assert "d-1" not in directory.directives
    assert directory.forgotten_to == NOW - timedelta(minutes=3)
    assert directory.replay_of(first, "c2.directives.approved/0/11") == (
        "stale: decided before the oldest release this gateway remembers"
    )
    newer = release(valid_example, "d-4", NOW)
    assert directory.replay_of(newer, "p/0/12") is None
