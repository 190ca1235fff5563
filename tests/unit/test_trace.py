"""``c2bus trace`` without Kafka: matching records, building the timeline, rendering it."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import encode_event
from c2bus.core.decision import Decision
from c2bus.core.directives import (
    approved_directive,
    decided_status,
    decision_event,
    lifecycle_step,
)
from c2bus.core.events import (
    ApprovalData,
    ApprovalEvent,
    DirectiveData,
    DirectiveEvent,
    DirectiveState,
    Reason,
    Verdict,
)
from c2bus.core.held import Held, HeldApproval, HeldRecord
from c2bus.core.labels import Classification
from c2bus.errors import InvalidEvent
from c2bus.tools.trace import (
    APPROVED,
    DECISIONS,
    HELD,
    STATUS,
    SUBMITTED,
    Found,
    Matcher,
    as_json,
    build_timeline,
    format_duration,
    parse_duration,
    render_text,
)

T0 = datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC)
HASH = "sha256:" + "ab" * 32
ENFORCER = "enforcer-1"


def ms(n: float) -> datetime:
    return T0 + timedelta(milliseconds=n)


def directive(directive_id: str = "d-1", kind: str = "MOVE", at: datetime = T0) -> DirectiveEvent:
    return DirectiveEvent(
        specversion="1.0",
        id=directive_id,
        source="urn:c2bus:gateway:gateway-1",
        time=at,
        classification=Classification.NATO_SECRET,
        releasableto="NATO",
        subject="test-mnc-ne",
        data=DirectiveData(
            kind=kind,
            issuer="MNC-NE",
            target="POL-12BDE",
            expires=T0 + timedelta(hours=2),
            text="Move to assembly area BRAVO.",
        ),
    )


def verdict(v: Verdict, *reasons: tuple[str, str]) -> Decision:
    return Decision(v, tuple(Reason(r, m) for r, m in reasons), "alliance-main", 3, HASH)


def found(role: str, event: object, offset: int = 0, timestamp_ms: int | None = None) -> Found:
    return Found(role, event, f"c2.{role}", 0, offset, timestamp_ms)  # type: ignore[arg-type]


def decided(
    d: DirectiveEvent, decision: Decision, at: datetime, approvals: int = 0, **kw: str
) -> list[Found]:
    """What the enforcer writes for one decision: the audit record, the DECIDED step and,
    when allowed, the approved directive."""
    out = [
        found(DECISIONS, decision_event(d, decision, at, "urn:c2bus:enforcer", approvals, **kw)),
        found(STATUS, decided_status(d, decision, at, ENFORCER, approvals, **kw)),
    ]
    if decision.verdict is Verdict.ALLOW and not kw:
        out.append(found(APPROVED, approved_directive(d, at)))
    return out


def step(
    d: DirectiveEvent, state: DirectiveState, console: str, at: datetime, reason: str | None = None
) -> Found:
    """A gateway's lifecycle step, with its id as the gateway makes it."""
    event = lifecycle_step(
        d,
        state,
        event_id=f"{state.value.lower()}:{d.id}:{console}",
        actor="POL-12BDE",
        source="urn:c2bus:gateway:gateway-1",
        now=at,
        reason=reason,
    )
    return found(STATUS, event)


def approval(d: DirectiveEvent, approver: str, at: datetime) -> Found:
    event = ApprovalEvent(
        specversion="1.0",
        id=f"approval:{d.id}:{approver}",
        source="urn:c2bus:ingest",
        time=at,
        classification=Classification.NATO_SECRET,
        releasableto="NATO",
        data=ApprovalData(
            directive_id=d.id,
            target="POL-12BDE",
            approver=approver,
            nation="GBR",
            roles=["approver"],
        ),
    )
    return found(SUBMITTED, event)


def held(d: DirectiveEvent, *approvers: str) -> HeldRecord:
    return HeldRecord(d, [HeldApproval(a, "GBR", ["approver"]) for a in approvers])


def shuffled(records: list[Found]) -> list[Found]:
    copy = list(records)
    random.Random(7).shuffle(copy)
    return copy


def test_a_full_lifecycle_in_order_with_the_time_between_steps() -> None:
    d = directive()
    records = [
        found(SUBMITTED, d, timestamp_ms=int(T0.timestamp() * 1000) + 2),
        *decided(d, verdict(Verdict.ALLOW), ms(12.3)),
        step(d, DirectiveState.DELIVERED, "console-a", ms(40)),
        step(d, DirectiveState.DELIVERED, "console-b", ms(55.5)),
        step(d, DirectiveState.WILCO, "console-a", ms(1555.5)),
        step(d, DirectiveState.HAVE_DO, "console-a", ms(61555.5)),
    ]
    timeline = build_timeline("d-1", shuffled(records))

    assert timeline.found
    assert [s.step for s in timeline.steps] == [
        "submitted",
        "decided",
        "delivered",
        "delivered",
        "wilco",
        "have_do",
    ]
    hops = [s.since_previous_ms for s in timeline.steps]
    assert hops[0] is None
    assert hops[1:] == pytest.approx([12.3, 27.7, 15.5, 1500.0, 60000.0])
    assert [s.elapsed_ms for s in timeline.steps] == pytest.approx(
        [0, 12.3, 40, 55.5, 1555.5, 61555.5]
    )
    assert timeline.total_ms == pytest.approx(61555.5)
    assert timeline.state == "HAVE_DO"
    assert timeline.directive == {
        "kind": "MOVE",
        "issuer": "MNC-NE",
        "target": "POL-12BDE",
        "classification": "NATO SECRET",
        "releasableto": "NATO",
    }
    decision = timeline.steps[1]
    assert decision.fields["verdict"] == "ALLOW"
    assert decision.fields["policy_version"] == 3
    assert decision.fields["policy_set_id"] == "alliance-main"
    assert decision.fields["reasons"] == []
    assert decision.fields["approved"] is True
    # the decision, its DECIDED status and the approved directive are one step
    assert [r.role for r in decision.records] == [DECISIONS, STATUS, APPROVED]
    assert [s.fields["console"] for s in timeline.steps[2:4]] == ["console-a", "console-b"]
    assert timeline.steps[2].fields["actor"] == "POL-12BDE"

    text = render_text(timeline)
    assert "+12.3 ms" in text
    assert "+1.50 s" in text
    assert "+1m 00s" in text
    assert "Total: 1m 01s from submitted to have_do" in text
    assert "State: HAVE_DO" in text
    assert "ALLOW under alliance-main v3" in text
    assert "Kafka c2.directives.submitted/0/0 at 2026-11-26T08:00:00.002Z" in text


def test_cantco_carries_its_reason() -> None:
    d = directive()
    records = [
        found(SUBMITTED, d),
        *decided(d, verdict(Verdict.ALLOW), ms(5)),
        step(d, DirectiveState.DELIVERED, "console-a", ms(9)),
        step(d, DirectiveState.WILCO, "console-a", ms(900)),
        step(d, DirectiveState.CANTCO, "console-a", ms(4000), reason="bridge at grid 31U down"),
    ]
    timeline = build_timeline("d-1", records)

    assert [s.step for s in timeline.steps][-2:] == ["wilco", "cantco"]
    cantco = timeline.steps[-1]
    assert cantco.fields["reason"] == "bridge at grid 31U down"
    assert cantco.since_previous_ms == pytest.approx(3100)
    assert timeline.state == "CANTCO"  # the later of WILCO and CANTCO
    assert "by console console-a of POL-12BDE: bridge at grid 31U down" in render_text(timeline)


def test_a_denied_directive_stops_at_the_decision_with_every_reason() -> None:
    d = directive(kind="ENGAGE")
    denial = verdict(
        Verdict.DENY,
        ("roe.engage-area", "ENGAGE outside the area the ROE allow"),
        ("caveat.pol-no-strike", "POL caveat: no offensive action"),
    )
    timeline = build_timeline("d-1", shuffled([found(SUBMITTED, d), *decided(d, denial, ms(8))]))

    assert [s.step for s in timeline.steps] == ["submitted", "decided"]
    assert timeline.state == "DENIED"
    step = timeline.steps[1]
    assert step.fields["approved"] is False
    assert step.fields["reasons"] == [
        {"rule": "roe.engage-area", "message": "ENGAGE outside the area the ROE allow"},
        {"rule": "caveat.pol-no-strike", "message": "POL caveat: no offensive action"},
    ]
    assert [r.role for r in step.records] == [DECISIONS, STATUS]
    text = render_text(timeline)
    assert "DENY under alliance-main v3" in text
    assert "- roe.engage-area: ENGAGE outside the area the ROE allow" in text
    assert "- caveat.pol-no-strike: POL caveat: no offensive action" in text
    assert "Total: 8.0 ms from submitted to decided" in text


def test_held_waiting_for_approval_then_released() -> None:
    d = directive(kind="ENGAGE")
    hold = verdict(Verdict.HOLD, ("approval.two-person", "needs two approvers"))
    waiting = [
        found(SUBMITTED, d),
        *decided(d, hold, ms(10)),
        approval(d, "alice", ms(2000)),
        *decided(d, hold, ms(2010), approvals=1),
        found(HELD, held(d), offset=0),
        found(HELD, held(d, "alice"), offset=1),
    ]
    timeline = build_timeline("d-1", shuffled(waiting))

    assert [s.step for s in timeline.steps] == ["submitted", "decided", "approval", "decided"]
    assert [s.fields.get("approvals") for s in timeline.steps] == [None, 0, None, 1]
    assert timeline.steps[2].fields["approver"] == "alice"
    assert timeline.state == "HELD"
    assert timeline.held is not None
    assert timeline.held.approvals == (
        {"approver": "alice", "nation": "GBR", "roles": ["approver"]},
    )
    text = render_text(timeline)
    assert "waiting for approval (approvals so far: alice (GBR, approver))" in text
    assert "HOLD under alliance-main v3 (sha256:abababab), 1 approval so far" in text

    released = [
        *waiting,
        approval(d, "bob", ms(5000)),
        *decided(d, verdict(Verdict.ALLOW), ms(5010), approvals=2),
        found(HELD, None, offset=2),  # the tombstone written with the release
        step(d, DirectiveState.DELIVERED, "console-a", ms(5100)),
    ]
    timeline = build_timeline("d-1", shuffled(released))
    assert [s.step for s in timeline.steps][-3:] == ["approval", "decided", "delivered"]
    assert timeline.steps[-2].fields["verdict"] == "ALLOW"
    assert timeline.steps[-2].fields["approved"] is True
    assert timeline.held is None
    assert timeline.state == "DELIVERED"


def test_a_replayed_copy_shows_but_does_not_change_the_state() -> None:
    d = directive()
    copy = directive(at=ms(3000))
    records = [
        found(SUBMITTED, d, offset=1),
        *decided(d, verdict(Verdict.ALLOW), ms(10)),
        step(d, DirectiveState.DELIVERED, "console-a", ms(20)),
        found(SUBMITTED, copy, offset=7),
        *decided(
            copy, verdict(Verdict.DENY, ("replay", "already decided")), ms(3010), replay_of="0-7"
        ),
    ]
    timeline = build_timeline("d-1", shuffled(records))

    assert [s.step for s in timeline.steps] == [
        "submitted",
        "decided",
        "delivered",
        "submitted",
        "decided",
    ]
    assert [s.fields.get("resubmitted") for s in timeline.steps] == [False, None, None, True, None]
    assert timeline.steps[-1].fields["replay_of"] == "0-7"
    assert timeline.state == "DELIVERED"
    assert "(a replayed copy, input position 0-7)" in render_text(timeline)


def test_steps_at_the_same_instant_keep_the_lifecycle_order() -> None:
    d = directive()
    records = [
        step(d, DirectiveState.HAVE_DO, "console-a", T0),
        step(d, DirectiveState.WILCO, "console-a", T0),
        step(d, DirectiveState.DELIVERED, "console-a", T0),
        *decided(d, verdict(Verdict.ALLOW), T0),
        found(SUBMITTED, d),
    ]
    timeline = build_timeline("d-1", records)
    assert [s.step for s in timeline.steps] == [
        "submitted",
        "decided",
        "delivered",
        "wilco",
        "have_do",
    ]
    assert all(s.since_previous_ms == 0 for s in timeline.steps[1:])


def test_exact_duplicates_count_once_but_repeated_deliveries_do_not() -> None:
    d = directive()
    first = step(d, DirectiveState.DELIVERED, "console-a", ms(10))
    again = step(d, DirectiveState.DELIVERED, "console-a", ms(30))  # a new session, same id
    timeline = build_timeline("d-1", [found(SUBMITTED, d), first, first, again])
    assert [s.step for s in timeline.steps] == ["submitted", "delivered", "delivered"]
    assert timeline.notes == ("1 duplicate record(s) counted once",)


def test_without_the_submission_times_count_from_the_first_step_found() -> None:
    d = directive()
    records = [
        *decided(d, verdict(Verdict.ALLOW), ms(10))[1:],
        step(d, DirectiveState.WILCO, "c", ms(50)),
    ]
    timeline = build_timeline("d-1", records)
    assert [s.step for s in timeline.steps] == ["decided", "wilco"]
    assert timeline.steps[0].fields["verdict"] == "ALLOW"  # from the DECIDED status alone
    assert timeline.steps[0].fields["approved"] is True  # the approved record joins it
    assert timeline.total_ms == pytest.approx(40)
    assert timeline.directive["issuer"] == "MNC-NE"
    assert "submission is not in the searched window" in timeline.notes[0]


def test_a_decided_status_alone_still_says_hold_and_how_many_approvals() -> None:
    d = directive(kind="ENGAGE")
    hold = verdict(Verdict.HOLD, ("approval.two-person", "needs two approvers"))
    [_, status] = decided(d, hold, ms(10), approvals=1)
    timeline = build_timeline("d-1", [found(SUBMITTED, d), status])
    step = timeline.steps[1]
    assert (step.fields["verdict"], step.fields["approvals"]) == ("HOLD", 1)
    assert step.fields["reasons"] == [{"rule": "approval.two-person", "message": ""}]
    assert timeline.state == "HELD"
    assert "the decision record is not in the window" in render_text(timeline)


def test_an_approved_record_without_its_decision_is_timed_by_kafka() -> None:
    d = directive()
    released = int(ms(15).timestamp() * 1000)
    records = [
        found(SUBMITTED, d),
        found(APPROVED, approved_directive(d, ms(15)), timestamp_ms=released),
        step(d, DirectiveState.DELIVERED, "console-a", ms(20)),
    ]
    timeline = build_timeline("d-1", records)
    assert [s.step for s in timeline.steps] == ["submitted", "approved", "delivered"]
    assert timeline.steps[1].elapsed_ms == pytest.approx(15)  # not the directive's own time
    assert timeline.state == "DELIVERED"


def test_nothing_found() -> None:
    timeline = build_timeline("d-1", [])
    assert not timeline.found
    assert timeline.steps == ()
    assert timeline.state is None


def test_json_lists_the_steps_with_their_fields() -> None:
    d = directive()
    records = [
        found(SUBMITTED, d, offset=4, timestamp_ms=int(T0.timestamp() * 1000)),
        *decided(d, verdict(Verdict.ALLOW), ms(12.3456)),
        step(d, DirectiveState.WILCO, "console-a", ms(100)),
    ]
    doc = json.loads(json.dumps(as_json(build_timeline("d-1", records))))
    assert doc["directive_id"] == "d-1"
    assert doc["state"] == "WILCO"
    assert doc["total_ms"] == 100.0
    assert [s["step"] for s in doc["steps"]] == ["submitted", "decided", "wilco"]
    submitted, decision, wilco = doc["steps"]
    assert submitted["time"] == "2026-11-26T08:00:00+00:00"
    assert submitted["since_previous_ms"] is None
    assert submitted["records"] == [
        {
            "topic": "c2.directives.submitted",
            "partition": 0,
            "offset": 4,
            "kafka_time": "2026-11-26T08:00:00+00:00",
        }
    ]
    assert decision["since_previous_ms"] == 12.346
    assert decision["verdict"] == "ALLOW"
    assert decision["policy_hash"] == HASH
    assert wilco["console"] == "console-a"
    assert wilco["actor"] == "POL-12BDE"


# --- matching records ----------------------------------------------------------------------


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = 0
    offset: int = 0
    timestamp: int = 0


def test_the_matcher_keeps_the_directive_s_records_and_refuses_bad_ones() -> None:
    topics = TopicNames("c2")
    matcher = Matcher("d-1", topics)
    d, other = directive(), directive("d-2")
    wilco = step(d, DirectiveState.WILCO, "console-a", ms(5)).event
    assert wilco is not None and not isinstance(wilco, HeldRecord)

    hit = matcher.match(Record(topics.submitted, b"POL-12BDE", encode_event(d), 2, 9, 1234))
    assert hit is not None
    assert (hit.role, hit.event, hit.partition, hit.offset, hit.timestamp_ms) == (
        SUBMITTED,
        d,
        2,
        9,
        1234,
    )
    assert matcher.match(Record(topics.submitted, b"POL-12BDE", encode_event(other))) is None
    assert matcher.match(Record(topics.status, b"d-1", encode_event(wilco))) is not None
    assert matcher.match(Record("c2.sa", b"T1", b"not even JSON")) is None  # not searched
    with pytest.raises(InvalidEvent):
        matcher.match(Record(topics.status, b"d-1", b"{not json"))
    with pytest.raises(InvalidEvent):  # a directive is not a status event
        matcher.match(Record(topics.status, b"d-1", encode_event(d)))
    with pytest.raises(InvalidEvent):
        matcher.match(Record(topics.decisions, b"d-1", None))

    # The held topic: only the directive's own key; a tombstone is a finding too.
    kept = Held(d, frozenset(), 0).encode()
    found_held = matcher.match(Record(topics.held, b"d-1", kept))
    assert found_held is not None and isinstance(found_held.event, HeldRecord)
    tombstone = matcher.match(Record(topics.held, b"d-1", None))
    assert tombstone is not None and tombstone.event is None
    assert matcher.match(Record(topics.held, b"seen:d-1", b"{}")) is None
    assert matcher.match(Record(topics.held, b"d-2", b"garbage")) is None
    with pytest.raises(InvalidEvent):
        matcher.match(Record(topics.held, b"d-1", b"garbage"))


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("30m", 1800), ("1h30m", 5400), ("90s", 90), ("2d", 172800), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "1x", "-1h", "0s", "1h junk"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_spans_read_well() -> None:
    assert format_duration(12.34) == "12.3 ms"
    assert format_duration(2413) == "2.41 s"
    assert format_duration(185_000) == "3m 05s"
    assert format_duration(2 * 3600_000 + 7 * 60_000) == "2h 07m"
    assert format_duration(27 * 3600_000) == "1d 03h"
