"""Gateway routing and protocol, without sockets: who receives what, and what parses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from c2bus.core.codec import decode_event
from c2bus.core.entitlement import Routed, Scope, UnitTree, entitled
from c2bus.core.events import Envelope
from c2bus.core.identity import Identity
from c2bus.core.labels import NATO_MEMBERS, Classification
from c2bus.core.protocol import (
    Area,
    BadMessage,
    Ping,
    Stream,
    Subscribe,
    event_frame,
    parse_client_message,
    state_frame,
)
from c2bus.services.gateway.routing import Hub, Outbox, Session

TREE = UnitTree(
    {
        "MNC-NE": ("JFC-BRUNSSUM",),
        "POL-12BDE": ("MNC-NE", "JFC-BRUNSSUM"),
        "NLD-11AMB": ("JFC-BRUNSSUM",),
    }
)


def identity(
    unit: str = "JFC-BRUNSSUM",
    nation: str = "DEU",
    clearance: Classification = Classification.NATO_SECRET,
) -> Identity:
    return Identity("t", nation, clearance, unit, frozenset({"console"}))


def scope(
    *streams: Stream,
    root: str = "JFC-BRUNSSUM",
    area: Area | None = None,
    types: frozenset[str] | None = None,
    units: bool = False,
) -> Scope:
    return Scope(frozenset(streams or tuple(Stream)), types, area, root, units)


def routed(event: Envelope, stream: Stream, key: str | None = None) -> Routed:
    return Routed(stream, event, event.label, f"frame-{event.id}".encode(), key)


def example(valid_example: Any, name: str, **data: Any) -> Envelope:
    doc = valid_example(name)
    doc["data"].update(data)
    return decode_event(json.dumps(doc))


def test_parse_client_messages() -> None:
    message = parse_client_message('{"op": "subscribe", "id": "a", "streams": ["sa", "decisions"]}')
    assert message == Subscribe(streams=[Stream.SA, Stream.DECISIONS], id="a")
    assert parse_client_message('{"op": "ping"}') == Ping()
    resume = parse_client_message(
        '{"op": "subscribe", "streams": ["sa"], "positions": {"c2.sa/3": 41},'
        ' "area": {"south": 50, "west": 4, "north": 54, "east": 8}}'
    )
    assert isinstance(resume, Subscribe)
    assert resume.positions == {"c2.sa/3": 41}
    assert resume.area == Area(50, 4, 54, 8)


@pytest.mark.parametrize(
    ("raw", "correlation"),
    [
        ('{"op": "subscribe", "id": "c1", "streams": ["weather"]}', "c1"),
        ('{"op": "subscribe", "id": "c2", "streams": []}', "c2"),
        ('{"op": "subscribe", "id": "c4", "streams": ["sa"], "positions": {"c2.sa/1": -5}}', "c4"),
        ('{"op": "ack", "id": "c5", "directive_id": "d", "state": "MAYBE"}', "c5"),
        ('{"op": "submit", "id": "c6", "directive": {"kind": "MOVE"}}', "c6"),
        ('{"op": "launch", "id": "c3"}', "c3"),
        # an approval names no approver: the gateway takes them from the token
        (
            '{"op": "approve", "id": "c8", "directive_id": "d", "target": "POL-12BDE",'
            ' "classification": "NATO SECRET", "releasableto": "NATO", "approver": "SHAPE"}',
            "c8",
        ),
        ('{"op": "approve", "id": "c9", "directive_id": "d"}', "c9"),
        ("not json", ""),
        # an area whose south is north of its north matches nothing: refused, not accepted
        (
            '{"op": "subscribe", "id": "c10", "streams": ["sa"],'
            ' "area": {"south": 55, "west": 5, "north": 50, "east": 6}}',
            "c10",
        ),
        # the protocol is text: a binary frame is refused, however well formed
        (b'{"op": "ping", "id": "c11"}', "c11"),
        # nested deeper than any decoder recurses: a bad message, not a dead reader
        ("[" * 10_000 + "]" * 10_000, ""),
        ('{"op": "ping", "id": "c7", "x": ' + "[" * 10_000 + "]" * 10_000 + "}", ""),
    ],
)
def test_bad_client_messages_keep_their_correlation_id(raw: str | bytes, correlation: str) -> None:
    with pytest.raises(BadMessage) as err:
        parse_client_message(raw)
    assert err.value.correlation_id == correlation


def test_loose_input_is_refused_with_what_is_wrong() -> None:
    area = (
        '{"op": "subscribe", "streams": ["sa"],'
        ' "area": {"south": 55, "west": 5, "north": 50.5, "east": 6}}'
    )
    with pytest.raises(BadMessage, match=r"south \(55\) is north of north \(50.5\) - at `\$.area`"):
        parse_client_message(area)
    with pytest.raises(BadMessage, match="a binary frame: messages are text frames"):
        parse_client_message(b'{"op": "ping"}')


def test_event_frame_embeds_the_event_once_and_the_state_frame_is_the_same(
    valid_example: Any,
) -> None:
    raw = json.dumps(valid_example("sa-track")).encode()
    text = event_frame(Stream.SA, "c2.sa/1/42", raw)
    assert isinstance(text, bytes)  # encoded once, sent as a text message to each console
    frame = json.loads(text)
    assert frame == {"op": "event", "stream": "sa", "pos": "c2.sa/1/42", "event": json.loads(raw)}
    assert json.loads(state_frame(text)) == {**frame, "op": "state"}


def test_directives_go_to_the_subtree_of_target_or_issuer(valid_example: Any) -> None:
    event = example(valid_example, "directive")  # JFC-BRUNSSUM -> NLD-11AMB
    item = routed(event, Stream.DIRECTIVES)
    assert entitled(identity("NLD-11AMB"), scope(root="NLD-11AMB"), TREE, item)
    assert entitled(identity("JFC-BRUNSSUM"), scope(root="JFC-BRUNSSUM"), TREE, item)
    assert not entitled(identity("POL-12BDE"), scope(root="POL-12BDE"), TREE, item)
    to_brigade = routed(example(valid_example, "directive", target="POL-12BDE"), Stream.DIRECTIVES)
    # MNC-NE commands POL-12BDE: its console sees the directive; without the tree, it does not
    assert entitled(identity("MNC-NE"), scope(root="MNC-NE"), TREE, to_brigade)
    assert not entitled(identity("MNC-NE"), scope(root="MNC-NE"), UnitTree(), to_brigade)
    assert not entitled(identity("NLD-11AMB"), scope(Stream.DECISIONS), TREE, item)


def test_decisions_go_to_the_issuer_subtree_only(valid_example: Any) -> None:
    item = routed(example(valid_example, "decision"), Stream.DECISIONS)  # issuer JFC-BRUNSSUM
    assert entitled(identity("JFC-BRUNSSUM"), scope(), TREE, item)
    assert not entitled(identity("NLD-11AMB"), scope(root="NLD-11AMB"), TREE, item)


def test_status_goes_to_issuer_and_target_but_decided_to_the_issuer_only(
    valid_example: Any,
) -> None:
    item = routed(example(valid_example, "directive-status"), Stream.STATUS)  # WILCO
    assert entitled(identity("JFC-BRUNSSUM"), scope(), TREE, item)
    assert entitled(identity("NLD-11AMB"), scope(root="NLD-11AMB"), TREE, item)
    assert not entitled(identity("POL-12BDE"), scope(root="POL-12BDE"), TREE, item)
    decided = routed(example(valid_example, "directive-status", state="DECIDED"), Stream.STATUS)
    assert entitled(identity("JFC-BRUNSSUM"), scope(), TREE, decided)
    assert not entitled(identity("NLD-11AMB"), scope(root="NLD-11AMB"), TREE, decided)


def test_area_of_interest_and_types(valid_example: Any) -> None:
    track = example(valid_example, "sa-track", position={"lat": 52.1, "lon": 5.2})
    item = routed(track, Stream.SA)
    netherlands = Area(south=50.7, west=3.3, north=53.6, east=7.3)
    poland = Area(south=49.0, west=14.1, north=54.9, east=24.2)
    me = identity()
    assert entitled(me, scope(Stream.SA, area=netherlands), TREE, item)
    assert not entitled(me, scope(Stream.SA, area=poland), TREE, item)
    assert entitled(me, scope(Stream.SA, types=frozenset({"c2bus.sa.track.v1"})), TREE, item)
    assert not entitled(me, scope(Stream.SA, types=frozenset({"c2bus.sa.position.v1"})), TREE, item)
    assert not entitled(me, scope(Stream.DIRECTIVES), TREE, item)  # stream not subscribed


def test_an_area_across_the_antimeridian() -> None:
    pacific = Area(south=-10, west=170, north=10, east=-170)
    assert pacific.contains(0, 175) and pacific.contains(0, -175)
    assert not pacific.contains(0, 0) and not pacific.contains(20, 175)


def test_unit_subtree_limits_own_force_sa_only_when_asked(valid_example: Any) -> None:
    status = routed(example(valid_example, "sa-unit-status", unit_id="NLD-11AMB"), Stream.SA)
    track = routed(example(valid_example, "sa-track"), Stream.SA)
    me = identity()
    assert entitled(me, scope(Stream.SA, root="MNC-NE"), TREE, status)  # no unit filter asked
    assert not entitled(me, scope(Stream.SA, root="MNC-NE", units=True), TREE, status)
    assert entitled(me, scope(Stream.SA, root="JFC-BRUNSSUM", units=True), TREE, status)
    assert entitled(me, scope(Stream.SA, root="MNC-NE", units=True), TREE, track)  # not a unit


def test_outbox_sends_replies_then_snapshot_then_events_in_order() -> None:
    outbox = Outbox(10_000)
    assert outbox.put(b"e1") and outbox.put(b"e2", key="T1")
    outbox.snapshot.append(b'{"op":"event","pos":"x"}')
    outbox.snapshot.append(b'{"op":"snapshot_end"}')
    outbox.reply(b"r1")
    sent = []
    while (item := outbox.take()) is not None:
        sent.append(item[0])
    assert sent == [b"r1", b'{"op":"state","pos":"x"}', b'{"op":"snapshot_end"}', b"e1", b"e2"]
    assert outbox.bytes == 0


def test_under_pressure_sa_is_conflated_to_the_latest_per_entity_in_order() -> None:
    outbox = Outbox(100)  # conflates past 50 bytes
    conflated = []
    outbox.on_conflate = lambda: conflated.append(1)
    for n in range(4):
        assert outbox.put(f"A{n}-{'x' * 10}".encode(), key="A")  # 14 bytes each
        assert outbox.put(f"B{n}-{'x' * 10}".encode(), key="B")
    sent = []
    while (item := outbox.take()) is not None:
        sent.append(item[0][:2])
    # A0 B0 A1 fit (42 bytes); from B1 on, every new A or B replaces the one of the same
    # entity still waiting (B1 replaces B0, A2 replaces A1 …), and goes to the end
    assert sent == [b"A0", b"A3", b"B3"]
    assert len(conflated) == 5
    assert not outbox.overflowed


def test_a_full_outbox_overflows_instead_of_dropping_a_directive_silently() -> None:
    outbox = Outbox(100)
    assert outbox.put(b"d" * 60)
    assert not outbox.put(b"d" * 60)  # not SA: cannot be conflated
    assert outbox.overflowed
    assert not outbox.put(b"x")  # nothing more is queued once marked


def test_routing_skips_partitions_being_replayed_and_offsets_replay_handled(
    valid_example: Any,
) -> None:
    hub = Hub()
    hub.tree = TREE
    session = Session(identity(), Outbox(10_000))
    session.scope = scope()
    hub.add(session)
    item = routed(example(valid_example, "sa-track"), Stream.SA)
    tp = ("c2.sa", 0)
    session.catching_up.add(tp)
    assert hub.route(item, tp, 5) == 0
    session.catching_up.clear()
    session.marks[tp] = 7
    assert hub.route(item, tp, 7) == 0  # the replay sent it already
    assert hub.route(item, tp, 8) == 1
    assert tp not in session.marks
    assert hub.route(item, ("c2.sa", 1), 0) == 1  # other partitions are not affected


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
    doc = {
        "specversion": "1.0",
        "id": "e",
        "source": "s",
        "type": "c2bus.sa.track.v1",
        "time": "2026-11-26T07:00:00Z",
        "classification": level.value,
        "releasableto": ",".join(sorted(releasable)),
        "data": {"track_id": "T", "position": {"lat": 1, "lon": 2}, "domain": "AIR"},
    }
    event = decode_event(json.dumps(doc))
    hub = Hub()
    sessions = []
    for nation, clearance in viewers:
        session = Session(identity(nation=nation, clearance=clearance), Outbox(10_000))
        session.scope = scope(Stream.SA)
        hub.add(session)
        sessions.append(session)
    delivered = hub.route(routed(event, Stream.SA), ("c2.sa", 0), 0)
    for session in sessions:
        got = len(session.outbox.entries) == 1
        assert got == event.label.allows(session.identity.clearance, session.identity.nation)
    assert delivered == sum(len(s.outbox.entries) for s in sessions)


def test_a_console_that_never_catches_up_holds_its_bound_not_a_growing_queue() -> None:
    outbox = Outbox(1000)
    for n in range(100_000):
        assert outbox.put(f"{n:08d}{'x' * 92}".encode(), key=f"T{n % 3}")
    assert outbox.bytes <= outbox.limit // 2 + 100
    assert len(outbox.entries) < 3000  # replaced entries are dropped, not kept as husks
    assert not outbox.empty()
    latest = []
    while (item := outbox.take()) is not None:
        latest.append(int(item[0][:8]))
    assert latest[-3:] == [99_997, 99_998, 99_999]
    assert outbox.empty()
