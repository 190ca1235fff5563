"""Gateway routing and protocol, without sockets: who receives what, and what parses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.codec import decode_event
from services.domain.identity import Identity
from services.domain.labels import NATO_MEMBERS, Classification
from services.gateway.hub import Hub, Session, in_scope
from services.gateway.protocol import (
    BadMessage,
    Ping,
    Stream,
    Subscribe,
    event_frame,
    parse_client_message,
)


def identity(
    unit: str = "MNC-NE",
    nation: str = "DEU",
    clearance: Classification = Classification.NATO_SECRET,
) -> Identity:
    return Identity("t", nation, clearance, unit, frozenset({"console"}))


def test_parse_client_messages() -> None:
    message = parse_client_message('{"op": "subscribe", "id": "a", "streams": ["sa", "decisions"]}')
    assert message == Subscribe(streams=[Stream.SA, Stream.DECISIONS], id="a")
    assert parse_client_message('{"op": "ping"}') == Ping()


@pytest.mark.parametrize(
    ("raw", "correlation"),
    [
        ('{"op": "subscribe", "id": "c1", "streams": ["weather"]}', "c1"),
        ('{"op": "subscribe", "id": "c2", "streams": []}', "c2"),
        ('{"op": "launch", "id": "c3"}', "c3"),
        ("not json", ""),
    ],
)
def test_bad_client_messages_keep_their_correlation_id(raw: str, correlation: str) -> None:
    with pytest.raises(BadMessage) as err:
        parse_client_message(raw)
    assert err.value.correlation_id == correlation


def test_event_frame_embeds_the_event_once(valid_example: Any) -> None:
    raw = json.dumps(valid_example("sa-track")).encode()
    frame = json.loads(event_frame(Stream.SA, "c2.sa/1/42", raw))
    assert frame == {"op": "event", "stream": "sa", "pos": "c2.sa/1/42", "event": json.loads(raw)}


def test_directive_scope_is_target_or_issuer(valid_example: Any) -> None:
    event = decode_event(json.dumps(valid_example("directive")))  # JFC-BRUNSSUM -> NLD-11AMB
    assert in_scope(identity("NLD-11AMB"), Stream.DIRECTIVES, event)
    assert in_scope(identity("JFC-BRUNSSUM"), Stream.DIRECTIVES, event)
    assert not in_scope(identity("POL-12BDE"), Stream.DIRECTIVES, event)
    assert not in_scope(identity("NLD-11AMB"), Stream.DECISIONS, event)  # wrong stream type


def test_decisions_go_to_the_issuer_only(valid_example: Any) -> None:
    event = decode_event(json.dumps(valid_example("decision")))  # issuer JFC-BRUNSSUM
    assert in_scope(identity("JFC-BRUNSSUM"), Stream.DECISIONS, event)
    assert not in_scope(identity("NLD-11AMB"), Stream.DECISIONS, event)


async def test_full_queue_marks_the_session_slow_instead_of_dropping_silently() -> None:
    session = Session(identity(), queue_max=2)
    assert session.offer("a") and session.offer("b")
    assert not session.offer("c")
    assert session.overflowed.is_set()
    assert not session.offer("d")  # nothing more is queued once marked
    assert [session.queue.get_nowait(), session.queue.get_nowait()] == ["a", "b"]
    await asyncio.sleep(0)


NATIONS = [*sorted(NATO_MEMBERS)[:6], "AUS", "JPN"]


@given(
    level=st.sampled_from(list(Classification)),
    releasable=st.sets(st.sampled_from([*NATIONS, "NATO"]), min_size=1, max_size=3),
    viewers=st.lists(
        st.tuples(st.sampled_from(NATIONS), st.sampled_from(list(Classification))), max_size=6
    ),
)
def test_routing_never_sends_what_the_label_forbids(
    level: Classification, releasable: set[str], viewers: list[tuple[str, Classification]]
) -> None:
    doc = json.loads(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "e",
                "source": "s",
                "type": "c2bus.sa.track.v1",
                "time": "2026-11-26T07:00:00Z",
                "classification": level.value,
                "releasableto": ",".join(sorted(releasable)),
                "data": {"track_id": "T", "position": {"lat": 1, "lon": 2}, "domain": "AIR"},
            }
        )
    )
    event = decode_event(json.dumps(doc))
    hub = Hub()
    sessions = []
    for nation, clearance in viewers:
        session = Session(identity(nation=nation, clearance=clearance), queue_max=10)
        session.streams.add(Stream.SA)
        hub.add(session)
        sessions.append(session)
    delivered = hub.route(Stream.SA, event, event.label, "frame")
    for session in sessions:
        got = session.queue.qsize() == 1
        assert got == event.label.allows(session.identity.clearance, session.identity.nation)
    assert delivered == sum(s.queue.qsize() for s in sessions)
