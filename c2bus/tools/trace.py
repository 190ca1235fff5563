"""``c2bus trace``: one directive's timeline, read back from the Kafka topics.

Three parts, kept apart so the middle one can be tested without Kafka:

- :class:`Matcher` decides, record by record, whether a record concerns the directive
  (decoding it with the contract of its topic; a record that does not decode raises
  :class:`InvalidEvent` and is counted, never fatal);
- :func:`build_timeline` turns the matching events into ordered steps (submitted,
  approval, decided, delivered, wilco, cantco, have_do, expired) with the time between
  them: pure, no I/O;
- :func:`search` reads the topics over a time window, each partition only up to its end
  offset when the search starts, so it always ends; :func:`trace_directive` puts the
  three together.

Step times are the events' own ``time`` attributes (the clocks of the services that wrote
them); the Kafka record timestamps are kept alongside.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from c2bus.adapters.kafka import LIBRARY_ERRORS, new_consumer, start_client, topic_partitions
from c2bus.adapters.settings import KafkaSettings
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import MALFORMED, EventDecoder
from c2bus.core.events import (
    ApprovalEvent,
    DecisionEvent,
    DirectiveEvent,
    DirectiveState,
    DirectiveStatusEvent,
    SubmittedEvent,
    Verdict,
)
from c2bus.core.held import HeldRecord
from c2bus.errors import C2BusError, InvalidEvent, KafkaError

TracedEvent = DirectiveEvent | ApprovalEvent | DecisionEvent | DirectiveStatusEvent

SUBMITTED = "directives.submitted"
APPROVED = "directives.approved"
DECISIONS = "decisions"
STATUS = "directives.status"
HELD = "directives.held"

#: Causal order of the step kinds: it breaks ties between steps with the same time.
_RANK = {
    "submitted": 0,
    "approval": 1,
    "decided": 2,
    "approved": 3,
    "delivered": 4,
    "wilco": 5,
    "cantco": 5,
    "have_do": 6,
    "expired": 7,
}
#: How far along the lifecycle a state is (the trace's state is the furthest reached).
_PROGRESS = {
    "SUBMITTED": 0,
    "HELD": 1,
    "DENIED": 2,
    "APPROVED": 2,
    "DELIVERED": 3,
    "WILCO": 4,
    "CANTCO": 4,
    "HAVE_DO": 5,
    "EXPIRED": 5,
}


class DirectiveNotFound(C2BusError):
    """No record of the directive in the searched window."""


# --- durations -----------------------------------------------------------------------------

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``30m``, ``24h``, ``1h30m``, ``2d`` or ``90s``."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30m, 24h, 1h30m, 2d")
    seconds = sum(float(n) * _UNITS_S[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def format_duration(ms: float) -> str:
    """A span for people: ``12.3 ms``, ``2.41 s``, ``3m 05s``, ``2h 07m``, ``1d 03h``."""
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    if ms < 1000:
        return f"{sign}{ms:.1f} ms"
    if ms < 60_000:
        return f"{sign}{ms / 1000:.2f} s"
    seconds = int(ms // 1000)
    if seconds < 3600:
        return f"{sign}{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{sign}{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{sign}{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


def format_time(moment: datetime) -> str:
    """UTC, to the millisecond: ``2026-11-26T14:50:46.123Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _ms(moment: int | None) -> datetime | None:
    return None if moment is None or moment < 0 else datetime.fromtimestamp(moment / 1000, UTC)


# --- what was found ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """One record that concerns the traced directive, decoded, and where it was read.

    ``role`` is its topic's role (``directives.submitted``, ``decisions``…). ``event`` is
    the decoded event, or for the held topic the held record, or ``None`` for a tombstone
    there (the directive is no longer held).
    """

    role: str
    event: TracedEvent | HeldRecord | None
    topic: str = ""
    partition: int = 0
    offset: int = 0
    timestamp_ms: int | None = None

    def position(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "kafka_time": None if self.timestamp_ms is None else _iso(_ms(self.timestamp_ms)),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


class Matcher:
    """Picks the records about one directive out of the c2bus topics.

    Each topic is decoded with its own contract (what its consumers accept): a record that
    does not decode raises :class:`InvalidEvent`. On the held topic only the directive's
    own key is looked at (its value is the enforcer's held record, not an event).
    """

    def __init__(self, directive_id: str, topics: TopicNames) -> None:
        self.directive_id = directive_id
        self.key = directive_id.encode()
        self.roles = {
            topics.submitted: SUBMITTED,
            topics.approved: APPROVED,
            topics.decisions: DECISIONS,
            topics.status: STATUS,
            topics.held: HELD,
        }
        self._submitted: EventDecoder[SubmittedEvent] = EventDecoder(SubmittedEvent)
        self._approved: EventDecoder[DirectiveEvent] = EventDecoder(DirectiveEvent)
        self._decisions: EventDecoder[DecisionEvent] = EventDecoder(DecisionEvent)
        self._status: EventDecoder[DirectiveStatusEvent] = EventDecoder(DirectiveStatusEvent)
        self._held = msgspec.json.Decoder(HeldRecord)

    def match(self, record: Any) -> Found | None:
        """The record as a :class:`Found` if it concerns the directive, else ``None``."""
        role = self.roles.get(record.topic)
        if role is None:
            return None
        if role == HELD:
            if record.key != self.key:
                return None  # another directive, or a ``seen:`` replay mark
            return self._found(record, role, self._held_value(record.value))
        if record.value is None:
            raise InvalidEvent("record has no value")
        event = self._decode(role, record.value)
        return self._found(record, role, event) if self._concerns(event) else None

    def _decode(self, role: str, value: bytes) -> TracedEvent:
        if role == SUBMITTED:
            return self._submitted.decode_event(value)
        if role == APPROVED:
            return self._approved.decode_event(value)
        if role == DECISIONS:
            return self._decisions.decode_event(value)
        return self._status.decode_event(value)

    def _held_value(self, value: bytes | None) -> HeldRecord | None:
        if value is None:
            return None
        try:
            return self._held.decode(value)
        except (msgspec.ValidationError, *MALFORMED) as exc:
            raise InvalidEvent(f"not a held record: {exc}") from exc

    def _concerns(self, event: TracedEvent) -> bool:
        if isinstance(event, DirectiveEvent):
            return event.id == self.directive_id
        return event.data.directive_id == self.directive_id

    @staticmethod
    def _found(record: Any, role: str, event: TracedEvent | HeldRecord | None) -> Found:
        return Found(role, event, record.topic, record.partition, record.offset, record.timestamp)


# --- the timeline --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the lifecycle.

    ``step`` is one of ``submitted``, ``approval``, ``decided``, ``approved`` (only when
    the approved record has no decision to go with), ``delivered``, ``wilco``, ``cantco``,
    ``have_do``, ``expired``. ``fields`` holds what the step says (verdict, reasons,
    actor…); ``records`` where each record behind it was read.
    """

    step: str
    time: datetime
    fields: dict[str, Any]
    records: tuple[Found, ...]
    since_previous_ms: float | None = None
    elapsed_ms: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "time": _iso(self.time),
            "since_previous_ms": _round(self.since_previous_ms),
            "elapsed_ms": _round(self.elapsed_ms),
            **self.fields,
            "records": [r.position() for r in self.records],
        }


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 3)


@dataclass(frozen=True, slots=True)
class HeldState:
    """The directive is in the enforcer's held state, waiting for approvals."""

    approvals: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Timeline:
    """A directive's steps in time order, and the furthest state they reached."""

    directive_id: str
    steps: tuple[Step, ...]
    #: SUBMITTED, HELD, DENIED, APPROVED, DELIVERED, WILCO, CANTCO, HAVE_DO or EXPIRED
    state: str | None
    #: kind, issuer, target, classification, releasableto (from the first record with them)
    directive: dict[str, str]
    held: HeldState | None = None
    notes: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.steps)

    @property
    def total_ms(self) -> float:
        return self.steps[-1].elapsed_ms if self.steps else 0.0


def _suffix(event_id: str, prefix: str) -> str:
    """``decision:d-1:hold:0`` -> ``d-1:hold:0`` (pairs a decision with its DECIDED step)."""
    return event_id[len(prefix) :] if event_id.startswith(prefix) else f"{prefix}{event_id}"


def _console(status: DirectiveStatusEvent) -> str | None:
    """The console's subject, from a gateway status id ``<state>:<directive id>:<subject>``."""
    head = f"{status.data.state.value.lower()}:{status.data.directive_id}:"
    if not status.id.startswith(head):
        return None
    return status.id[len(head) :] or None


def _decided_fields(
    directive_id: str, decision: DecisionEvent | None, status: DirectiveStatusEvent | None
) -> dict[str, Any]:
    fields: dict[str, Any]
    if decision is not None:
        data = decision.data
        fields = {
            "verdict": data.verdict.value,
            "policy_set_id": data.policy_set_id,
            "policy_version": data.policy_version,
            "policy_hash": data.policy_hash,
            "reasons": [{"rule": r.rule, "message": r.message} for r in data.reasons],
            "decision_id": decision.id,
        }
    elif status is not None:
        # Only the DECIDED step was found: its reason is "<verdict>[: rule, rule…]".
        verdict, _, rules = (status.data.reason or "").partition(":")
        fields = {
            "verdict": verdict.strip() or None,
            "reasons": [{"rule": r.strip(), "message": ""} for r in rules.split(",") if r.strip()],
        }
    else:
        fields = {"verdict": None, "reasons": []}
    # ``decision:<id>:hold:<n>`` and ``decided:<id>:hold:<n>``: held with n approvals;
    # ``…:replay:<position>``: the denial of a copy submitted again (see core.directives).
    if decision is not None:
        rest = decision.id.removeprefix(f"decision:{directive_id}")
    else:
        rest = status.id.removeprefix(f"decided:{directive_id}") if status else ""
    if rest.startswith(":hold:") and rest[6:].isdigit():
        fields["approvals"] = int(rest[6:])
    if rest.startswith(":replay:"):
        fields["replay_of"] = rest[8:]
    if status is not None:
        fields["status_id"] = status.id
        fields["actor"] = status.data.actor
    fields["approved"] = False
    return fields


@dataclass
class _Sorted:
    """The records found, by what they are (events once each; held records apart)."""

    submitted: list[Found] = field(default_factory=list)
    approvals: list[Found] = field(default_factory=list)
    decisions: dict[str, Found] = field(default_factory=dict)
    decided: dict[str, Found] = field(default_factory=dict)
    approved: list[Found] = field(default_factory=list)
    statuses: list[Found] = field(default_factory=list)
    held: list[Found] = field(default_factory=list)
    duplicates: int = 0

    @classmethod
    def of(cls, found: Iterable[Found]) -> _Sorted:
        out = cls()
        seen: set[tuple[str, str, datetime]] = set()
        for f in sorted(found, key=lambda f: (f.topic, f.partition, f.offset)):
            event = f.event
            if f.role == HELD or event is None or isinstance(event, HeldRecord):
                out.held.append(f)
                continue
            identity = (f.role, event.id, event.time)
            if identity in seen:
                out.duplicates += 1
                continue
            seen.add(identity)
            if isinstance(event, ApprovalEvent):
                out.approvals.append(f)
            elif isinstance(event, DirectiveEvent):
                released = f.role == APPROVED or event.decisionid is not None
                (out.approved if released else out.submitted).append(f)
            elif isinstance(event, DecisionEvent):
                out.decisions[_suffix(event.id, "decision:")] = f
            elif event.data.state is DirectiveState.DECIDED:
                out.decided[_suffix(event.id, "decided:")] = f
            else:
                out.statuses.append(f)
        return out


def _submitted_step(f: Found, again: bool) -> Step:
    assert isinstance(f.event, DirectiveEvent)
    d = f.event
    fields = {
        "kind": d.data.kind,
        "issuer": d.data.issuer,
        "target": d.data.target,
        "classification": d.classification.value,
        "releasableto": d.releasableto,
        "source": d.source,
        "subject": d.subject,
        "expires": _iso(d.data.expires),
        "text": d.data.text,
        "resubmitted": again,
    }
    return Step("submitted", d.time, fields, (f,))


def _approval_step(f: Found) -> Step:
    assert isinstance(f.event, ApprovalEvent)
    a = f.event
    fields = {
        "approver": a.data.approver,
        "nation": a.data.nation,
        "roles": list(a.data.roles),
        "comment": a.data.comment,
        "source": a.source,
    }
    return Step("approval", a.time, fields, (f,))


def _decided_steps(directive_id: str, found: _Sorted) -> list[Step]:
    """A decision and its DECIDED status are one step; the approved record joins the
    decision it names (or that decision's DECIDED status)."""
    steps: list[Step] = []
    by_decision: dict[str, int] = {}
    for suffix in sorted(found.decisions.keys() | found.decided.keys()):
        decision_found, status_found = found.decisions.get(suffix), found.decided.get(suffix)
        decision = decision_found.event if decision_found else None
        status = status_found.event if status_found else None
        assert decision is None or isinstance(decision, DecisionEvent)
        assert status is None or isinstance(status, DirectiveStatusEvent)
        source = decision or status
        assert source is not None
        behind = tuple(x for x in (decision_found, status_found) if x is not None)
        by_decision[suffix] = len(steps)
        fields = _decided_fields(directive_id, decision, status)
        steps.append(Step("decided", source.time, fields, behind))
    for f in found.approved:
        assert isinstance(f.event, DirectiveEvent)
        index = by_decision.get(_suffix(f.event.decisionid or "", "decision:"))
        if index is not None:
            step = steps[index]
            fields = {**step.fields, "approved": True}
            steps[index] = replace(step, fields=fields, records=(*step.records, f))
        else:
            # An approved record whose decision is not in the window: its event time is the
            # directive's own, so its Kafka timestamp says when it was released.
            moment = _ms(f.timestamp_ms) or f.event.time
            steps.append(Step("approved", moment, {"decision_id": f.event.decisionid}, (f,)))
    return steps


def _status_step(f: Found) -> Step:
    assert isinstance(f.event, DirectiveStatusEvent)
    s = f.event
    fields: dict[str, Any] = {"actor": s.data.actor, "console": _console(s), "status_id": s.id}
    if s.data.reason is not None:
        fields["reason"] = s.data.reason
    return Step(s.data.state.value.lower(), s.time, fields, (f,))


def build_timeline(directive_id: str, found: Iterable[Found]) -> Timeline:
    """The directive's timeline from the records found about it (any order).

    A decision and the DECIDED status written with it (ids ``decision:X`` and ``decided:X``)
    are one ``decided`` step, and so is the approved directive naming that decision in
    ``decisionid``. Every other status event is a step of its own: several DELIVERED
    (one per console session), WILCO, CANTCO with its reason, HAVE DO. Exact duplicates
    (same topic, id and time) count once. Steps are ordered by time, ties in lifecycle
    order; each carries the time since the step before and since the submission (or, if
    the submission was not found, since the first step).
    """
    parts = _Sorted.of(found)
    submitted = sorted(parts.submitted, key=lambda f: (_time(f), f.offset))
    steps = [_submitted_step(f, n > 0) for n, f in enumerate(submitted)]
    steps += [_approval_step(f) for f in parts.approvals]
    steps += _decided_steps(directive_id, parts)
    steps += [_status_step(f) for f in parts.statuses]
    order = {id(s): n for n, s in enumerate(steps)}
    steps.sort(key=lambda s: (s.time, _RANK.get(s.step, 9), order[id(s)]))

    notes: list[str] = []
    origin = next((s.time for s in steps if s.step == "submitted"), None)
    if steps and origin is None:
        notes.append(
            "the submission is not in the searched window: times are counted from the "
            "first step found"
        )
    if parts.duplicates:
        notes.append(f"{parts.duplicates} duplicate record(s) counted once")
    timed: list[Step] = []
    for n, step in enumerate(steps):
        first = origin or steps[0].time
        previous = None if n == 0 else _span(steps[n - 1].time, step.time)
        timed.append(replace(step, since_previous_ms=previous, elapsed_ms=_span(first, step.time)))
    held = _held(parts.held)
    return Timeline(
        directive_id=directive_id,
        steps=tuple(timed),
        state=_state(timed, held),
        directive=_headline(timed),
        held=held,
        notes=tuple(notes),
    )


def _time(f: Found) -> datetime:
    assert f.event is not None and not isinstance(f.event, HeldRecord)
    return f.event.time


def _span(start: datetime, end: datetime) -> float:
    return (end - start) / timedelta(milliseconds=1)


def _held(records: list[Found]) -> HeldState | None:
    """Held now if the last record under the directive's key on the held topic is a held
    record (a tombstone means it was released or denied)."""
    if not records:
        return None
    last = max(records, key=lambda f: (f.partition, f.offset))
    if not isinstance(last.event, HeldRecord):
        return None
    return HeldState(
        tuple(
            {"approver": a.approver, "nation": a.nation, "roles": list(a.roles)}
            for a in last.event.approvals
        )
    )


def _state(steps: list[Step], held: HeldState | None) -> str | None:
    """The furthest state the steps reached; a later verdict replaces an earlier one
    (HOLD, then ALLOW after the approvals), a replayed copy's denial changes nothing."""
    state: str | None = None
    for step in steps:
        if step.step == "decided":
            if "replay_of" in step.fields:
                continue
            verdict = step.fields.get("verdict")
            candidate = {
                Verdict.ALLOW.value: "APPROVED",
                Verdict.DENY.value: "DENIED",
                Verdict.HOLD.value: "HELD",
            }.get(str(verdict))
            if candidate is None:
                continue
            if state is None or _PROGRESS[state] <= _PROGRESS["APPROVED"]:
                state = candidate
            continue
        candidate = {
            "submitted": "SUBMITTED",
            "approved": "APPROVED",
            "approval": None,
        }.get(step.step, step.step.upper())
        if candidate is None or candidate not in _PROGRESS:
            continue
        if state is None or _PROGRESS[candidate] >= _PROGRESS[state]:
            state = candidate
    if held is not None and state in (None, "SUBMITTED"):
        state = "HELD"
    return state


def _headline(steps: list[Step]) -> dict[str, str]:
    for step in steps:
        if step.step == "submitted":
            keys = ("kind", "issuer", "target", "classification", "releasableto")
            return {k: str(step.fields[k]) for k in keys}
    for step in steps:
        for record in step.records:
            event = record.event
            if isinstance(event, DecisionEvent):
                return {
                    "kind": event.data.kind,
                    "issuer": event.data.issuer,
                    "target": event.data.target,
                    "classification": event.classification.value,
                    "releasableto": event.releasableto,
                }
            if isinstance(event, DirectiveStatusEvent):
                return {
                    "issuer": event.data.issuer,
                    "target": event.data.target,
                    "classification": event.classification.value,
                    "releasableto": event.releasableto,
                }
    return {}


# --- reading Kafka -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Search:
    """What was searched: the topics, from when, how many records, how many skipped."""

    topics: tuple[str, ...]
    since: datetime
    records: int = 0
    skipped: int = 0
    skipped_examples: tuple[str, ...] = ()


class _Collector:
    """Reads the window partition by partition, keeping what concerns the directive."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.found: list[Found] = []
        self.read = 0
        self.skipped = 0
        self.examples: list[str] = []
        self.partitions = 0
        self.done = 0

    def take(self, record: Any) -> None:
        self.read += 1
        try:
            hit = self.matcher.match(record)
        except InvalidEvent as exc:
            self.skipped += 1
            if len(self.examples) < 3:
                self.examples.append(f"{record.topic}/{record.partition}/{record.offset}: {exc}")
            return
        if hit is not None:
            self.found.append(hit)

    async def read_window(self, consumer: Any, tps: list[Any], since: datetime) -> None:
        """From the first record at or after ``since`` to the end offset each partition
        has now: records written later are left alone, so the read always ends."""
        self.partitions = len(tps)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)  # read_committed: the last stable offsets
        since_ms = max(0, int(since.timestamp() * 1000))
        starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        pending: list[Any] = []
        for tp in tps:
            start = starts.get(tp)
            if start is not None and start.offset < ends[tp]:
                consumer.seek(tp, start.offset)
                pending.append(tp)
        self.done = len(tps) - len(pending)
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=2000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        self.take(record)
            pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]
            self.done = len(tps) - len(pending)


async def search(
    kafka: KafkaSettings,
    topics: TopicNames,
    directive_id: str,
    *,
    since: datetime,
    timeout_s: float,
) -> tuple[list[Found], Search]:
    """Every record about the directive on the directive topics, from ``since`` (by Kafka
    record timestamp, found with ``offsets_for_times``) up to each partition's end offset
    when the search started, read ``read_committed``; within ``timeout_s`` overall.

    Records that do not decode are counted and skipped.
    """
    names = (topics.submitted, topics.decisions, topics.status, topics.approved, topics.held)
    collector = _Collector(Matcher(directive_id, topics))
    try:
        async with asyncio.timeout(timeout_s):
            tps = await topic_partitions(kafka, names, max(1.0, min(timeout_s, 15.0)))
            consumer = new_consumer(kafka, "c2bus-trace", group_id=None, fetch_max_wait_ms=100)
            await start_client(consumer, kafka)
            try:
                await collector.read_window(consumer, tps, since)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
    except TimeoutError:
        where = (
            f"{collector.done} of {collector.partitions} partitions read, {collector.read} records"
            if collector.partitions
            else "the topics were not reached"
        )
        raise KafkaError(
            f"the search did not finish within {timeout_s:g}s ({where}): "
            "give a longer --timeout or a shorter --since"
        ) from None
    except LIBRARY_ERRORS as exc:
        raise KafkaError(f"reading the directive topics failed: {exc!r}") from exc
    searched = Search(names, since, collector.read, collector.skipped, tuple(collector.examples))
    return collector.found, searched


async def trace_directive(
    kafka: KafkaSettings,
    directive_id: str,
    *,
    since_s: float,
    timeout_s: float,
    now: datetime | None = None,
) -> tuple[Timeline, Search]:
    """Search the window and build the timeline; :class:`DirectiveNotFound` if nothing in
    the window concerns the directive."""
    since = (now or datetime.now(UTC)) - timedelta(seconds=since_s)
    found, searched = await search(
        kafka, TopicNames(kafka.topic_prefix), directive_id, since=since, timeout_s=timeout_s
    )
    timeline = build_timeline(directive_id, found)
    if not timeline.found and timeline.held is None:
        skipped = f"; {searched.skipped} undecodable skipped" if searched.skipped else ""
        raise DirectiveNotFound(
            f"directive {directive_id!r} not found: no record about it on the "
            f"'{kafka.topic_prefix}.' directive topics since {format_time(since)} "
            f"({searched.records} records searched{skipped}): check the id and "
            "C2BUS_TOPIC_PREFIX, or search further back with --since"
        )
    return timeline, searched


# --- output --------------------------------------------------------------------------------


def as_json(timeline: Timeline, searched: Search | None = None) -> dict[str, Any]:
    """The trace for machines: the steps with their fields, the state, the totals."""
    doc: dict[str, Any] = {
        "directive_id": timeline.directive_id,
        "state": timeline.state,
        "directive": timeline.directive,
        "held": None if timeline.held is None else {"approvals": list(timeline.held.approvals)},
        "total_ms": _round(timeline.total_ms),
        "steps": [s.as_json() for s in timeline.steps],
        "notes": list(timeline.notes),
    }
    if searched is not None:
        doc["searched"] = {
            "topics": list(searched.topics),
            "since": _iso(searched.since),
            "records": searched.records,
            "skipped_undecodable": searched.skipped,
        }
    return doc


def _detail(step: Step) -> list[str]:
    """The detail column of a step: its first line, then any more."""
    f = step.fields
    lines: list[str]
    if step.step == "submitted":
        again = "again (a replay of the same id), " if f["resubmitted"] else ""
        lines = [f"{again}{f['kind']} by {f['issuer']} to {f['target']}, source {f['source']}"]
    elif step.step == "approval":
        roles = ",".join(f["roles"]) or "no roles"
        comment = f": {f['comment']}" if f["comment"] else ""
        lines = [f"by {f['approver']} ({f['nation']}, {roles}){comment}"]
    elif step.step == "decided":
        head = str(f.get("verdict") or "?")
        if "policy_set_id" in f:
            head += f" under {f['policy_set_id']} v{f['policy_version']} ({f['policy_hash'][:15]})"
        if "approvals" in f:
            n = f["approvals"]
            head += ", no approval yet" if n == 0 else f", {n} approval{'s' * (n > 1)} so far"
        if "replay_of" in f:
            head += f" (a replayed copy, input position {f['replay_of']})"
        lines = [head]
        lines += [
            f"- {r['rule']}: {r['message']}" if r["message"] else f"- {r['rule']}"
            for r in f["reasons"]
        ]
        if "decision_id" in f and "status_id" not in f:
            lines.append("(no DECIDED status found for this decision)")
        if "status_id" in f and "decision_id" not in f:
            lines.append("(the decision record is not in the window: from the DECIDED status)")
    elif step.step == "approved":
        lines = [f"released on the approved topic (decision {f['decision_id']})"]
    else:
        who = f"console {f['console']} of {f['actor']}" if f.get("console") else f"{f['actor']}"
        reason = f": {f['reason']}" if f.get("reason") else ""
        lines = [f"{'to' if step.step == 'delivered' else 'by'} {who}{reason}"]
    for record in step.records:
        where = f"{record.topic}/{record.partition}/{record.offset}" if record.topic else ""
        if record.role == APPROVED and step.step == "decided":
            lines.append(f"released at {where}")
        elif step.step == "submitted" and record.timestamp_ms is not None:
            lines.append(f"Kafka {where} at {format_time(_ms(record.timestamp_ms) or step.time)}")
    return lines


def render_text(timeline: Timeline, searched: Search | None = None) -> str:
    """The trace for people: a header, the steps as an aligned table, the total, notes."""
    out: list[str] = []
    d = timeline.directive
    what = f"{d['kind']} " if "kind" in d else ""
    if d:
        out.append(
            f"Directive {timeline.directive_id}: {what}from {d.get('issuer', '?')} to "
            f"{d.get('target', '?')} ({d.get('classification', '?')}, releasable to "
            f"{d.get('releasableto', '?')})"
        )
    else:
        out.append(f"Directive {timeline.directive_id}")
    state = timeline.state or "unknown"
    if timeline.held is not None:
        approvals = ", ".join(
            f"{a['approver']} ({a['nation']}, {','.join(a['roles']) or 'no roles'})"
            for a in timeline.held.approvals
        )
        state += f", waiting for approval (approvals so far: {approvals or 'none'})"
    out.append(f"State: {state}")
    out.append("")
    rows = [
        (
            s.step,
            format_time(s.time),
            "" if s.since_previous_ms is None else "+" + format_duration(s.since_previous_ms),
            _detail(s),
        )
        for s in timeline.steps
    ]
    header = ("STEP", "TIME (UTC)", "SINCE PREVIOUS", ["DETAIL"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    indent = sum(widths) + 2 * 3
    for step, moment, hop, detail in [header, *rows]:
        first = f"{step:<{widths[0]}}  {moment:<{widths[1]}}  {hop:>{widths[2]}}  {detail[0]}"
        out.append(first.rstrip())
        out += [" " * indent + line for line in detail[1:]]
    if timeline.steps:
        first_step, last_step = timeline.steps[0], timeline.steps[-1]
        out.append("")
        out.append(
            f"Total: {format_duration(timeline.total_ms)} from {first_step.step} to "
            f"{last_step.step}"
        )
    if searched is not None:
        prefix = searched.topics[0].partition(".")[0] if searched.topics else ""
        roles = ", ".join(t.removeprefix(f"{prefix}.") for t in searched.topics)
        out.append(
            f"Searched {searched.records} records since {format_time(searched.since)} "
            f"on {prefix}.{{{roles}}}"
        )
        if searched.skipped:
            out.append(
                f"note: {searched.skipped} record(s) in the window could not be decoded and "
                f"were skipped (e.g. {searched.skipped_examples[0]})"
            )
    out += [f"note: {n}" for n in timeline.notes]
    return "\n".join(out)
