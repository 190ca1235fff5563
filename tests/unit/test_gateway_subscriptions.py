"""The gateway's routing core without sockets or Kafka: how a subscription starts (live,
snapshot, resume, resync), what a scope may be, the outbox's signals, and the scope rules
the routing tests do not reach."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from c2bus.core.codec import decode_event
from c2bus.core.entitlement import Routed, Scope, UnitTree, entitled, in_scope
from c2bus.core.events import Envelope, event_type
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.core.protocol import Area, CloseCode, Stream, Subscribe, Unsubscribe, event_frame
from c2bus.errors import Refused
from c2bus.services.gateway.routing import (
    Hub,
    Outbox,
    Session,
    Signals,
    cut_short,
    replay_from,
    sa_position,
    scope_for,
    unsubscribe,
)
from c2bus.services.gateway.state import Latest, LatestSa, sa_key

TREE = UnitTree({"POL-12BDE": ("MNC-NE", "JFC-BRUNSSUM"), "MNC-NE": ("JFC-BRUNSSUM",)})
NOW = datetime(2026, 11, 26, 8, tzinfo=UTC)
SA, APPROVED = "c2.sa", "c2.directives.approved"


def identity(unit: str = "JFC-BRUNSSUM", nation: str = "DEU") -> Identity:
    return Identity("t", nation, Classification.NATO_SECRET, unit, frozenset({"console"}))


def example(valid_example: Any, name: str, **data: Any) -> Envelope:
    doc = valid_example(name)
    doc["data"].update(data)
    doc["time"] = NOW.isoformat()
    return decode_event(json.dumps(doc))


def routed(event: Envelope, stream: Stream) -> Routed:
    message = event_frame(stream, f"{SA}/0/1", json.dumps({"id": event.id}).encode())
    return Routed(
        stream, event, event.label, message, sa_key(event) if stream is Stream.SA else None
    )


def frames(outbox: Outbox) -> list[dict[str, Any]]:
    sent = []
    while (item := outbox.take()) is not None:
        sent.append(json.loads(item[0]))
    return sent


class Recorder(Signals):
    def __init__(self) -> None:
        self.woken = 0
        self.drains: list[bool] = []

    def wake(self) -> None:
        self.woken += 1

    def drained(self, drained: bool) -> None:
        self.drains.append(drained)


def hub_with(*partitions: tuple[str, int], next_offset: int = 10) -> Hub:
    hub = Hub()
    hub.tree = TREE
    hub.live_next = dict.fromkeys(partitions, next_offset)
    return hub


def subscribe(
    hub: Hub,
    session: Session,
    message: Subscribe,
    latest: LatestSa | None = None,
    log_starts: dict[tuple[str, int], int] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    scope = scope_for(session.identity, message, hub.tree)
    topics = {SA if s is Stream.SA else APPROVED for s in scope.streams}
    partitions = hub.partitions(topics)
    replay = replay_from(message.positions or {}, partitions)
    lost = cut_short(replay, log_starts or dict.fromkeys(replay, 0))
    started = hub.subscribe(
        session,
        message,
        scope,
        replay,
        lost,
        partitions=partitions,
        sa_topic=SA,
        latest=latest or LatestSa(timedelta(hours=1)),
        now=NOW,
    )
    return started, frames(session.outbox)


# --- how a subscription starts -----------------------------------------------------------


def test_a_live_subscription_starts_at_live_routing_and_says_so() -> None:
    hub = hub_with((SA, 0), (SA, 1), (APPROVED, 0))
    session = Session(identity(), Outbox(10_000))
    started, sent = subscribe(hub, session, Subscribe([Stream.DIRECTIVES], id="s1"))
    assert started.mode == "live" and started.replay == {}
    assert sent == [
        {
            "op": "subscribed",
            "id": "s1",
            "streams": ["directives"],
            "mode": "live",
            "positions": {f"{APPROVED}/0": 9},
        },
        {"op": "live", "id": "s1"},
    ]


def test_a_snapshot_holds_the_latest_entitled_sa_then_live(valid_example: Any) -> None:
    hub = hub_with((SA, 0), (SA, 1), next_offset=5)
    latest = LatestSa(timedelta(hours=1))
    inside = example(valid_example, "sa-track", track_id="IN")
    outside = example(valid_example, "sa-track", track_id="OUT", position={"lat": 10, "lon": 10})
    secret_for_others = example(valid_example, "sa-position")  # DEU, NLD, POL only
    for event in (inside, outside, secret_for_others):
        r = routed(event, Stream.SA)
        latest.update(sa_key(event), Latest(event, event.label, r.message))
    session = Session(identity(nation="GBR"), Outbox(10_000))
    area = Area(50, 0, 60, 20)
    started, sent = subscribe(hub, session, Subscribe([Stream.SA], id="s", area=area), latest)
    assert started.mode == "snapshot" and started.replay == {}
    assert [f["op"] for f in sent] == ["subscribed", "state", "snapshot_end", "live"]
    assert sent[0]["positions"] == {}  # the snapshot stands for the SA partitions
    assert sent[1]["op"] == "state"
    assert sent[2] == {
        "op": "snapshot_end",
        "id": "s",
        "count": 1,
        "positions": {f"{SA}/0": 4, f"{SA}/1": 4},
    }
    assert sent[3] == {"op": "live", "id": "s"}


def test_a_resume_behind_live_routing_replays_and_says_live_later() -> None:
    hub = hub_with((SA, 0), (SA, 1), next_offset=10)
    session = Session(identity(), Outbox(10_000))
    message = Subscribe([Stream.SA], id="r", positions={f"{SA}/0": 6, f"{SA}/1": 9})
    started, sent = subscribe(hub, session, message)
    assert started.mode == "resume"
    assert started.replay == {(SA, 0): 7}  # partition 1 is level with live routing
    assert session.catching_up == {(SA, 0)}
    assert session.marks == {(SA, 0): 6, (SA, 1): 9}
    assert [f["op"] for f in sent] == ["subscribed"]  # live comes after the replay
    assert sent[0]["positions"] == {f"{SA}/0": 6, f"{SA}/1": 9}


def test_a_resume_level_with_live_routing_goes_live_at_once() -> None:
    hub = hub_with((SA, 0), next_offset=10)
    session = Session(identity(), Outbox(10_000))
    started, sent = subscribe(hub, session, Subscribe([Stream.SA], positions={f"{SA}/0": 9}))
    assert started.replay == {} and not session.catching_up
    assert [f["op"] for f in sent] == ["subscribed", "live"]


def test_sa_cut_short_by_retention_is_resynced_with_a_snapshot() -> None:
    hub = hub_with((SA, 0), (APPROVED, 0), next_offset=50)
    session = Session(identity(), Outbox(10_000))
    message = Subscribe(
        [Stream.SA, Stream.DIRECTIVES],
        id="x",
        positions={f"{SA}/0": 3, f"{APPROVED}/0": 30},
    )
    started, sent = subscribe(hub, session, message, log_starts={(SA, 0): 20, (APPROVED, 0): 0})
    assert started.mode == "resync"
    assert started.replay == {(APPROVED, 0): 31}  # SA comes from the snapshot instead
    ops = [f["op"] for f in sent]
    assert ops == ["subscribed", "resync", "snapshot_end"]  # live waits for the replay
    assert sent[0]["mode"] == "snapshot"
    assert sent[1]["partitions"] == [f"{SA}/0"]


def test_directives_cut_short_are_resynced_from_the_first_offset_kafka_holds() -> None:
    hub = hub_with((APPROVED, 0), next_offset=50)
    session = Session(identity(), Outbox(10_000))
    message = Subscribe([Stream.DIRECTIVES], id="x", positions={f"{APPROVED}/0": 3})
    started, sent = subscribe(hub, session, message, log_starts={(APPROVED, 0): 20})
    assert started.mode == "resync" and started.replay == {(APPROVED, 0): 20}
    assert [f["op"] for f in sent] == ["subscribed", "resync"]
    assert sent[0]["mode"] == "resume"


def test_a_new_subscription_forgets_what_the_old_one_queued() -> None:
    hub = hub_with((SA, 0))
    session = Session(identity(), Outbox(10_000))
    session.outbox.put(b"old event")
    session.catching_up.add((SA, 0))
    session.marks[(SA, 0)] = 3
    _, sent = subscribe(hub, session, Subscribe([Stream.SA], snapshot=False))
    assert [f["op"] for f in sent] == ["subscribed", "live"]
    assert not session.catching_up and not session.marks


# --- what a scope may be ---------------------------------------------------------------


def test_a_console_may_scope_itself_to_its_own_subtree_only() -> None:
    me = identity("MNC-NE")
    assert scope_for(me, Subscribe([Stream.SA], units="POL-12BDE"), TREE).root == "POL-12BDE"
    with pytest.raises(Refused) as refused:
        scope_for(me, Subscribe([Stream.SA], units="JFC-BRUNSSUM"), TREE)
    assert refused.value.code == "forbidden" and refused.value.http_status == 403


def test_types_must_belong_to_the_subscribed_streams() -> None:
    me = identity()
    scope = scope_for(me, Subscribe([Stream.SA], types=["c2bus.sa.track.v1"]), TREE)
    assert scope.types == frozenset({"c2bus.sa.track.v1"})
    assert scope_for(me, Subscribe([Stream.SA]), TREE).types is None
    with pytest.raises(Refused, match=r"c2bus\.directive\.v1") as refused:
        scope_for(me, Subscribe([Stream.SA], types=["c2bus.directive.v1"]), TREE)
    assert refused.value.code == "bad_request"


@pytest.mark.parametrize("key", ["c2.sa", "c2.sa/x", "c2.other/0", "c2.sa/7"])
def test_a_resume_position_must_name_a_subscribed_partition(key: str) -> None:
    with pytest.raises(Refused) as refused:
        replay_from({key: 1}, [(SA, 0)])
    assert refused.value.code == "bad_position"


def test_unsubscribing_narrows_the_streams_and_answers() -> None:
    session = Session(identity(), Outbox(10_000))
    unsubscribe(session, Unsubscribe([Stream.SA], id="u0"))  # nothing subscribed yet
    session.scope = Scope(frozenset({Stream.SA, Stream.STATUS}), None, None, "X", False)
    unsubscribe(session, Unsubscribe([Stream.SA], id="u1"))
    assert session.scope.streams == frozenset({Stream.STATUS})
    assert frames(session.outbox) == [
        {"op": "unsubscribed", "id": "u0", "streams": []},
        {"op": "unsubscribed", "id": "u1", "streams": ["status"]},
    ]


# --- outboxes and sessions ---------------------------------------------------------------


def test_an_outbox_signals_its_writer_and_its_replay() -> None:
    signals = Recorder()
    outbox = Outbox(100, signals=signals)
    outbox.put(b"a" * 40)
    assert signals.woken == 1 and signals.drains == []
    outbox.put(b"b" * 40)  # past half the bound
    assert signals.drains == [False] and not outbox.drained
    outbox.take()  # back to half
    assert signals.drains == [False, True] and outbox.drained
    outbox.put(b"c" * 40)
    outbox.put(b"d" * 20)
    outbox.take()  # still past half: no change to signal
    assert signals.drains == [False, True, False]
    outbox.clear()  # a new subscription starts drained
    assert signals.drains == [False, True, False, True]
    Signals().wake()  # the default tells no one
    Signals().drained(True)


def test_a_console_that_stops_reading_its_replies_overflows() -> None:
    signals = Recorder()
    outbox = Outbox(10_000, signals=signals)
    for _ in range(Outbox.MAX_REPLIES):
        outbox.reply(b"pong")
    assert not outbox.overflowed
    outbox.reply(b"pong")
    assert outbox.overflowed and signals.woken == Outbox.MAX_REPLIES + 2


def test_an_entity_replaced_twice_under_pressure_counts_once() -> None:
    outbox = Outbox(100)
    conflated: list[int] = []
    outbox.on_conflate = lambda: conflated.append(1)
    outbox.put(b"x" * 45)
    outbox.put(b"A" * 10, key="A")  # past half: conflation starts with the next A
    outbox.put(b"A" * 10, key="A")
    assert len(conflated) == 1
    entries = list(outbox.entries)
    entries[-1].frame = None  # as if already replaced: nothing more to replace
    outbox.put(b"A" * 10, key="A")
    assert len(conflated) == 1


def test_sessions_note_directives_for_their_own_unit_only(valid_example: Any) -> None:
    directive = example(valid_example, "directive")  # to NLD-11AMB
    target = Session(identity("NLD-11AMB", "NLD"), Outbox(10_000))
    issuer = Session(identity("JFC-BRUNSSUM", "NLD"), Outbox(10_000))
    unsubscribed = Session(identity("NLD-11AMB", "NLD"), Outbox(10_000))
    for session in (target, issuer):
        session.scope = Scope(
            frozenset({Stream.DIRECTIVES}), None, None, session.identity.unit, False
        )
    item = routed(directive, Stream.DIRECTIVES)
    assert not unsubscribed.offer(UnitTree(), item)
    assert target.offer(UnitTree(), item) and issuer.offer(UnitTree(), item)
    assert target.outbox.take() == (item.message, directive)
    assert issuer.outbox.take() == (item.message, None)


def test_routing_turns_sa_outside_the_area_away_early(valid_example: Any) -> None:
    hub = Hub()
    near, far = Session(identity(), Outbox(10_000)), Session(identity(), Outbox(10_000))
    waiting = Session(identity(), Outbox(10_000))  # connected, not subscribed yet
    near.scope = Scope(frozenset({Stream.SA}), None, Area(54, 10, 55, 11), "JFC-BRUNSSUM", False)
    far.scope = Scope(frozenset({Stream.SA}), None, Area(0, 0, 1, 1), "JFC-BRUNSSUM", False)
    for session in (near, far, waiting):
        hub.add(session)
    track = routed(example(valid_example, "sa-track"), Stream.SA)
    assert hub.route(track, (SA, 0), 0) == 1
    assert not far.outbox.entries and not waiting.outbox.entries
    directive = routed(example(valid_example, "directive"), Stream.DIRECTIVES)
    assert hub.route(directive, (APPROVED, 0), 0) == 0  # no area check; not subscribed
    hub.remove(far)
    assert far not in hub.sessions


def test_only_sa_with_a_position_has_one(valid_example: Any) -> None:
    status = routed(example(valid_example, "sa-unit-status"), Stream.SA)
    directive = routed(example(valid_example, "directive"), Stream.DIRECTIVES)
    position = routed(example(valid_example, "sa-position"), Stream.SA)
    assert sa_position(status) is None and sa_position(directive) is None
    assert sa_position(position) == (53.05, 9.88)


# --- scope rules -------------------------------------------------------------------------


def test_own_force_positions_are_scoped_by_area_and_subtree(valid_example: Any) -> None:
    event = example(valid_example, "sa-position", unit_id="POL-12BDE")
    me = identity(nation="DEU")
    position = routed(event, Stream.SA)
    area_in, area_out = Area(53, 9, 54, 10), Area(0, 0, 1, 1)
    sa = frozenset({Stream.SA})
    assert entitled(me, Scope(sa, None, area_in, "MNC-NE", True), TREE, position)
    assert not entitled(me, Scope(sa, None, area_out, "JFC-BRUNSSUM", False), TREE, position)
    assert not entitled(me, Scope(sa, None, None, "NLD-11AMB", True), TREE, position)
    assert entitled(me, Scope(sa, None, None, "NLD-11AMB", False), TREE, position)


def test_an_event_on_a_stream_it_does_not_belong_to_is_refused(valid_example: Any) -> None:
    decision = example(valid_example, "decision")
    track = example(valid_example, "sa-track")
    scope = Scope(frozenset(Stream), None, None, "JFC-BRUNSSUM", False)
    assert not in_scope(scope, TREE, Stream.SA, decision)  # not SA: refused
    assert not in_scope(scope, TREE, Stream.DIRECTIVES, track)  # fail closed
    assert event_type(decision) == "c2bus.decision.v1"


def test_the_snapshot_keeps_each_entitys_newest_record_whatever_its_time(
    valid_example: Any,
) -> None:
    """Kafka's order per entity is the truth live consoles see: a report stamped in the future
    does not pin the snapshot, a later record stamped earlier replaces it."""
    latest = LatestSa(timedelta(hours=1))
    now = NOW
    track = example(valid_example, "sa-track", track_id="T")
    future = msgspec.structs.replace(track, time=now + timedelta(days=1))
    later = msgspec.structs.replace(track, id="t-later", time=now)
    for event in (future, later):
        latest.update(sa_key(event), Latest(event, event.label, routed(event, Stream.SA).message))
    [kept] = latest.current(now)
    assert kept.event is later


def test_a_policy_that_moves_a_subscribed_unit_away_ends_that_subscription() -> None:
    """The subtree is checked again whenever the command structure changes: a console that
    subscribed to a unit no longer under it gets nothing more, and is closed (4009) to
    subscribe again; the others are scoped by the new structure from then on."""
    hub = hub_with((APPROVED, 0))
    moved = Session(identity("MNC-NE"), Outbox(10_000))
    own = Session(identity("MNC-NE"), Outbox(10_000))
    idle = Session(identity("MNC-NE"), Outbox(10_000))  # connected, not subscribed yet
    for session in (moved, own, idle):
        hub.add(session)
    subscribe(hub, moved, Subscribe([Stream.DIRECTIVES], id="s", units="POL-12BDE"))
    subscribe(hub, own, Subscribe([Stream.DIRECTIVES], id="s"))
    assert moved.outbox.closing is None
    # POL-12BDE now under JFC-BRUNSSUM directly, no longer under MNC-NE
    after = UnitTree({"MNC-NE": ("JFC-BRUNSSUM",), "POL-12BDE": ("JFC-BRUNSSUM",)})
    assert hub.rescope(after) == [moved]
    assert hub.tree is after
    assert moved.scope is None and own.scope is not None
    assert moved.outbox.closing == (CloseCode.SCOPE_CHANGED, "the command structure changed")
    assert own.outbox.closing is None and idle.outbox.closing is None
    assert hub.rescope(after) == []  # once
