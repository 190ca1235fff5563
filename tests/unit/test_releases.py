"""A gateway delivers an approved directive only as the release itself: not expired, decided
within its replay horizon, and not a copy of a release it read at another position."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from c2bus.core.codec import decode_event
from c2bus.core.directives import approved_directive, lifecycle_step, stale_release
from c2bus.core.events import SA_CLOCK_SKEW, DirectiveEvent, DirectiveState, DirectiveStatusEvent
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


def step(directive: DirectiveEvent, state: DirectiveState, at: datetime) -> DirectiveStatusEvent:
    return lifecycle_step(
        directive,
        state,
        event_id=f"{state.value}:{directive.id}",
        actor="POL-12BDE",
        source="urn:test",
        now=at,
    )


def test_the_directory_folds_steps_read_and_its_own_steps_not_read_back(
    valid_example: Any,
) -> None:
    directory = DirectiveDirectory(capacity=2)
    d = release(valid_example, "d", NOW)
    directory.add(d, NOW.timestamp(), "approved/0/1")
    assert directory.state("d") is None
    assert directory.read_step(step(d, DirectiveState.DECIDED, NOW), "status/0/1") is (
        DirectiveState.DECIDED
    )
    directory.wrote("d", DirectiveState.WILCO, "status/0/2")  # written, not read back yet
    assert directory.state("d") is DirectiveState.WILCO
    # another gateway's CANTCO came first in the topic's order: it stands, ours is ignored
    assert directory.read_step(step(d, DirectiveState.CANTCO, NOW), "status/0/1b") is (
        DirectiveState.CANTCO
    )
    assert directory.read_step(step(d, DirectiveState.WILCO, NOW), "status/0/2") is None
    assert directory.state("d") is DirectiveState.CANTCO
    # a step after the directive's validity, as judged at the step's own time
    e = release(valid_example, "e", NOW)
    directory.add(e, NOW.timestamp(), "approved/0/2")
    late = e.data.expires + timedelta(seconds=1)
    assert directory.read_step(step(e, DirectiveState.WILCO, late), "status/1/1") is None
    assert directory.read_step(step(e, DirectiveState.EXPIRED, late), "status/1/2") is (
        DirectiveState.EXPIRED
    )


def test_the_directory_names_each_directive_whose_validity_ended_unfinished_once(
    valid_example: Any,
) -> None:
    directory = DirectiveDirectory(capacity=10)
    done, open_, later = (release(valid_example, i, NOW) for i in ("done", "open", "later"))
    for n, d in enumerate((done, open_)):
        directory.add(d, NOW.timestamp(), f"approved/0/{n}")
    directory.add(
        msgspec.structs.replace(
            later, data=msgspec.structs.replace(later.data, expires=NOW + timedelta(hours=3))
        ),
        NOW.timestamp(),
        "approved/0/9",
    )
    directory.wrote("done", DirectiveState.WILCO, "s/0/1")
    directory.wrote("done", DirectiveState.HAVE_DO, "s/0/2")
    directory.wrote("open", DirectiveState.WILCO, "s/1/1")
    ended = done.data.expires
    assert directory.expired(ended - timedelta(seconds=1)) == []
    assert [d.id for d in directory.expired(ended)] == ["open"]
    assert directory.expired(ended) == []  # once
    directory.expire_again(open_)  # Kafka did not take the step
    assert [d.id for d in directory.expired(ended)] == ["open"]
    directory.wrote("open", DirectiveState.EXPIRED, "s/1/2")
    directory.expire_again(open_)
    assert directory.expired(ended) == []
    assert [d.id for d in directory.expired(NOW + timedelta(hours=4))] == ["later"]


def test_the_directory_forgets_the_oldest_beyond_its_capacity(valid_example: Any) -> None:
    directory = DirectiveDirectory(capacity=2)
    events = [release(valid_example, f"d{n}", NOW + timedelta(minutes=n)) for n in range(6)]
    for n, d in enumerate(events):
        directory.add(d, NOW.timestamp(), f"approved/0/{n}")
        directory.read_step(step(d, DirectiveState.DECIDED, NOW), f"status/0/{n}")
        directory.wrote(d.id, DirectiveState.WILCO, f"status/1/{n}")
    assert list(directory.directives) == ["d4", "d5"] and list(directory.states) == ["d4", "d5"]
    assert directory.state("d0") is None  # its state and own steps forgotten with it
    assert len(directory._expiries) <= 2 * directory.capacity  # bounded too
    # a release decided before the newest one forgotten can no longer be told from a copy
    assert directory.forgotten_to == events[3].decidedat
    why = directory.replay_of(events[1], "approved/0/1")
    assert why == "stale: decided before the oldest release this gateway remembers"
    assert [d.id for d in directory.expired(NOW + timedelta(days=1))] == ["d4", "d5"]
    # read again where it was released: itself; anywhere else: a copy
    directory.add(events[5], NOW.timestamp(), "approved/0/5")
    assert directory.replay_of(events[5], "approved/0/5") is None
    assert directory.replay_of(events[5], "approved/3/7") == (
        "replay: directive d5 was released at approved/0/5"
    )
    # one decided earlier than the newest forgotten leaves that mark where it was
    early = release(valid_example, "early", NOW - timedelta(hours=1))
    for n, d in enumerate((early, events[0], events[1])):
        directory.add(d, NOW.timestamp(), f"approved/2/{n}")
    assert "early" not in directory.directives and directory.get("early") is None
    assert directory.get("d1") == events[1]
    assert directory.forgotten_to == events[5].decidedat
