"""Console sessions, their bounded outboxes, and the routing of events to them: the
gateway's routing core, pure (no asyncio, no sockets, no Kafka; ``make lint`` holds it).

Every session has an outbox bounded in bytes. Routing decides, per event, which sessions
may receive it (:func:`c2bus.core.entitlement.entitled`) and offers the pre-built frame to
each. Under
pressure (the outbox past half its bound) a new SA frame replaces the one still waiting
for the same entity: the console gets the latest state, positions still increase. A frame
that does not fit even so marks the session as overflowed, and it is closed with the
slow-consumer code: directives are never dropped silently.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from c2bus.core.entitlement import STREAM_TYPES, Routed, Scope, UnitTree, entitled
from c2bus.core.events import DirectiveEvent, PositionEvent, TrackEvent
from c2bus.core.identity import Identity
from c2bus.core.protocol import (
    CloseCode,
    Stream,
    Subscribe,
    Unsubscribe,
    frame,
    is_event_frame,
    parse_position_key,
    position_key,
    state_frame,
)
from c2bus.errors import Refused
from c2bus.services.gateway.state import LatestSa

TopicPartition = tuple[str, int]


class Signals:
    """What an outbox tells the session's writer; the default tells no one. The asyncio
    side (``sessions``) turns these into events it waits on."""

    def wake(self) -> None:
        """There is something to send, or the outbox overflowed."""

    def drained(self, drained: bool) -> None:
        """The event frames waiting went below (True) or above (False) half the bound."""


class Entry:
    """One frame waiting in an outbox; ``frame`` is None once a newer state replaced it."""

    __slots__ = ("frame", "key", "note", "size")

    def __init__(self, frame: bytes, key: str | None, note: DirectiveEvent | None) -> None:
        self.frame: bytes | None = frame
        self.size = len(frame)
        self.key = key
        self.note = note  # a directive delivered to its target: report it once sent


class Outbox:
    """Frames waiting for one console: replies first, then the snapshot, then events.

    Only event frames count against the bound; replies are few (requests are rate limited,
    and a console that stops reading them overflows at ``MAX_REPLIES``) and snapshot frames
    are shared with the gateway's latest-SA table.
    """

    MAX_REPLIES = 256

    def __init__(
        self,
        limit_bytes: int,
        on_conflate: Callable[[], None] | None = None,
        signals: Signals | None = None,
    ) -> None:
        self.limit = limit_bytes
        self.conflate_at = limit_bytes // 2
        self.replies: deque[bytes] = deque()
        self.snapshot: deque[bytes] = deque()  # event frames (sent as state) and the end marker
        self.entries: deque[Entry] = deque()
        self.pending_sa: dict[str, Entry] = {}
        self.bytes = 0
        self.dead = 0  # replaced entries still in ``entries``
        self.on_conflate = on_conflate
        self.signals = signals or Signals()
        self.overflowed = False
        #: (close code, reason) once the session is to be closed for another cause than
        #: overflowing (its scope fell away)
        self.closing: tuple[int, str] | None = None
        #: the event frames waiting are at most half the bound (a replay may add more)
        self.drained = True

    def close_with(self, code: int, reason: str) -> None:
        """Have the session's writer close its console with ``code`` (nothing more is sent)."""
        self.closing = (code, reason)
        self.signals.wake()

    def overflow(self) -> None:
        """Mark the outbox overflowed: its console is closed as slow and resumes."""
        self.overflowed = True
        self.signals.wake()

    def _set_drained(self, drained: bool) -> None:
        if drained != self.drained:
            self.drained = drained
            self.signals.drained(drained)

    def reply(self, frame: bytes) -> None:
        if len(self.replies) >= self.MAX_REPLIES:
            self.overflow()
        self.replies.append(frame)
        self.signals.wake()

    def put(self, frame: bytes, key: str | None = None, note: DirectiveEvent | None = None) -> bool:
        """Queue a frame (``key``: the SA entity it is the state of); False on overflow."""
        if self.overflowed:
            return False
        size = len(frame)
        if key is not None and self.bytes + size > self.conflate_at:
            older = self.pending_sa.get(key)
            if older is not None and older.frame is not None:
                older.frame = None
                self.bytes -= older.size
                self.dead += 1
                if self.dead > 1024 and self.dead * 2 > len(self.entries):
                    self._compact()
                if self.on_conflate is not None:
                    self.on_conflate()
        if self.bytes + size > self.limit:
            self.overflow()
            return False
        entry = Entry(frame, key, note)
        self.entries.append(entry)
        if key is not None:
            self.pending_sa[key] = entry
        self.bytes += size
        if self.bytes > self.conflate_at:
            self._set_drained(False)
        self.signals.wake()
        return True

    def take(self) -> tuple[bytes, DirectiveEvent | None] | None:
        """The next frame to send, or None when there is nothing to send."""
        if self.replies:
            return self.replies.popleft(), None
        if self.snapshot:
            message = self.snapshot.popleft()
            return (state_frame(message) if is_event_frame(message) else message), None
        while self.entries:
            entry = self.entries.popleft()
            if entry.key is not None and self.pending_sa.get(entry.key) is entry:
                del self.pending_sa[entry.key]
            if entry.frame is None:
                self.dead -= 1
                continue  # replaced by a newer state of the same entity
            self.bytes -= entry.size
            if self.bytes <= self.conflate_at:
                self._set_drained(True)
            return entry.frame, entry.note
        return None

    def empty(self) -> bool:
        """Nothing to send (replaced entries waiting to be skipped do not count)."""
        return not self.replies and not self.snapshot and len(self.entries) == self.dead

    def _compact(self) -> None:
        """Drop replaced entries, so a console that never catches up holds no more than
        its bound (the replaced frames are already gone; this drops their husks)."""
        self.entries = deque(e for e in self.entries if e.frame is not None)
        self.dead = 0

    def clear(self) -> None:
        """Forget queued events and snapshot (a new subscription replaces the old)."""
        self.snapshot.clear()
        self.entries.clear()
        self.pending_sa.clear()
        self.bytes = 0
        self.dead = 0
        self._set_drained(True)


@dataclass(eq=False)
class Session:
    identity: Identity
    outbox: Outbox
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    scope: Scope | None = None
    #: Partitions being replayed for a resume: live events from them wait in Kafka.
    catching_up: set[TopicPartition] = field(default_factory=set)
    #: Per partition, the last offset a replay handled: live events up to it are skipped.
    marks: dict[TopicPartition, int] = field(default_factory=dict)
    #: Directives reported DELIVERED from this session (once each).
    delivered: set[str] = field(default_factory=set)

    def offer(self, tree: UnitTree, routed: Routed) -> bool:
        """Queue the event's frame if this console is entitled to the event."""
        scope = self.scope
        if scope is None or not entitled(self.identity, scope, tree, routed):
            return False
        event = routed.event
        note = (
            event
            if isinstance(event, DirectiveEvent) and event.data.target == self.identity.unit
            else None
        )
        return self.outbox.put(routed.message, routed.key, note)


def sa_position(routed: Routed) -> tuple[float, float] | None:
    """(lat, lon) of an SA event that has a position, else None."""
    if routed.stream is not Stream.SA:
        return None
    event = routed.event
    if isinstance(event, (TrackEvent, PositionEvent)):
        return event.data.position.lat, event.data.position.lon
    return None


class Hub:
    """The sessions of one gateway, the command structure that scopes them, and where live
    routing has got to in every partition (``live_next``: the next offset it handles)."""

    def __init__(self) -> None:
        self.sessions: set[Session] = set()
        self.tree = UnitTree()
        self.live_next: dict[TopicPartition, int] = {}

    def rescope(self, tree: UnitTree) -> list[Session]:
        """A policy version changed the command structure: from now on every session is
        scoped by ``tree``, and those whose subscribed units are no longer their unit or
        below it get nothing more and are closed (4009) to subscribe again. Returns them."""
        self.tree = tree
        fallen = [
            s
            for s in self.sessions
            if s.scope is not None and not tree.within(s.scope.root, s.identity.unit)
        ]
        for session in fallen:
            session.scope = None
            session.outbox.close_with(CloseCode.SCOPE_CHANGED, "the command structure changed")
        return fallen

    def partitions(self, topics: set[str]) -> list[TopicPartition]:
        """The partitions live routing follows of ``topics``, in order."""
        return sorted(tp for tp in self.live_next if tp[0] in topics)

    def subscribe(
        self,
        session: Session,
        message: Subscribe,
        scope: Scope,
        replay: dict[TopicPartition, int],
        lost: list[TopicPartition],
        *,
        partitions: list[TopicPartition],
        sa_topic: str,
        latest: LatestSa,
        now: datetime,
    ) -> Subscription:
        """Start the subscription at this instant of live routing: reset the session, queue
        the replies, the snapshot if one is due, and ``live`` unless a replay must first
        catch up (then the caller replays and queues ``live`` after it)."""
        outbox = session.outbox
        outbox.clear()
        session.catching_up.clear()
        session.marks.clear()
        session.scope = scope
        sa_partitions = {tp for tp in partitions if tp[0] == sa_topic}
        snapshot = Stream.SA in scope.streams and (
            (not replay and message.snapshot) or any(tp in sa_partitions for tp in lost)
        )
        if snapshot:  # the snapshot stands for every SA partition up to live routing
            for tp in sa_partitions:
                replay.pop(tp, None)
        live_next = self.live_next
        for tp, start in replay.items():
            session.marks[tp] = start - 1
            if start < live_next[tp]:
                session.catching_up.add(tp)
        positions = {
            position_key(*tp): (replay[tp] - 1 if tp in replay else live_next[tp] - 1)
            for tp in partitions
            if not (snapshot and tp in sa_partitions)
        }
        mode = "snapshot" if snapshot else ("resume" if message.positions else "live")
        outbox.reply(
            frame(
                "subscribed",
                id=message.id,
                streams=sorted(s.value for s in scope.streams),
                mode=mode,
                positions=positions,
            )
        )
        if lost:
            outbox.reply(
                frame(
                    "resync",
                    id=message.id,
                    partitions=[position_key(*tp) for tp in lost],
                    reason="retention dropped events after the given positions",
                )
            )
        if snapshot:
            self._snapshot(session, message.id, sa_partitions, latest, now)
        if session.catching_up:
            pending = {tp: replay[tp] for tp in session.catching_up}
        else:
            pending = {}
            live = frame("live", id=message.id)
            if snapshot:
                outbox.snapshot.append(live)  # after the snapshot
            else:
                outbox.put(live)
        return Subscription("resync" if lost else mode, pending)

    def _snapshot(
        self,
        session: Session,
        correlation: str,
        sa_partitions: set[TopicPartition],
        latest: LatestSa,
        now: datetime,
    ) -> None:
        scope = session.scope
        assert scope is not None
        identity, tree, outbox = session.identity, self.tree, session.outbox
        count = 0
        for entry in latest.current(now):
            routed = Routed(Stream.SA, entry.event, entry.label, entry.frame, None)
            if entitled(identity, scope, tree, routed):
                outbox.snapshot.append(entry.frame)
                count += 1
        positions = {position_key(*tp): self.live_next[tp] - 1 for tp in sorted(sa_partitions)}
        outbox.snapshot.append(
            frame("snapshot_end", id=correlation, count=count, positions=positions)
        )

    def add(self, session: Session) -> None:
        self.sessions.add(session)

    def remove(self, session: Session) -> None:
        self.sessions.discard(session)

    def route(self, routed: Routed, tp: TopicPartition, offset: int) -> int:
        """Offer a live event to every session entitled to it; returns how many took it."""
        delivered = 0
        tree = self.tree
        point = sa_position(routed)
        for session in self.sessions:
            if session.catching_up and tp in session.catching_up:
                continue  # its replay will read this event from Kafka
            marks = session.marks
            if marks and tp in marks:
                if offset <= marks[tp]:
                    continue  # the replay handled it already
                del marks[tp]
            if point is not None:
                # A quick no for SA outside the console's area; a yes is still decided in
                # full by ``entitled`` (label, stream, type) below.
                scope = session.scope
                area = scope.area if scope is not None else None
                if area is not None and not area.contains(*point):
                    continue
            if session.offer(tree, routed):
                delivered += 1
        return delivered


# --- subscriptions ---------------------------------------------------------------------------


def scope_for(identity: Identity, message: Subscribe, tree: UnitTree) -> Scope:
    """The scope a subscribe asks for, if this console may have it."""
    streams = frozenset(message.streams)
    root = message.units or identity.unit
    if not tree.within(root, identity.unit):
        raise Refused("forbidden", f"{root} is not {identity.unit} or a unit below it")
    types = None
    if message.types is not None:
        known = frozenset().union(*(STREAM_TYPES[s] for s in streams))
        unknown = sorted(set(message.types) - known)
        if unknown:
            raise Refused("bad_request", f"types not in the subscribed streams: {unknown}")
        types = frozenset(message.types)
    return Scope(streams, types, message.area, root, message.units is not None)


def replay_from(
    positions: dict[str, int], partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Where to replay each partition a resume names from: the offset after its position."""
    replay: dict[TopicPartition, int] = {}
    for key, offset in positions.items():
        tp = parse_position_key(key)
        if tp is None or tp not in partitions:
            raise Refused("bad_position", f"{key} is not a partition of the subscribed streams")
        replay[tp] = offset + 1
    return replay


def cut_short(
    replay: dict[TopicPartition, int], log_starts: dict[TopicPartition, int]
) -> list[TopicPartition]:
    """The partitions whose replay retention has cut short; they start at the first
    offset Kafka still holds (``replay`` is updated)."""
    lost = [tp for tp, start in replay.items() if start < log_starts[tp]]
    for tp in lost:
        replay[tp] = log_starts[tp]
    return lost


@dataclass(frozen=True, slots=True)
class Subscription:
    """How a subscription started: ``mode`` for the metrics (``live``, ``snapshot``,
    ``resume``, ``resync``), and the partitions to replay from Kafka (empty: none)."""

    mode: str
    replay: dict[TopicPartition, int]


def unsubscribe(session: Session, message: Unsubscribe) -> None:
    scope = session.scope
    if scope is not None:
        remaining = scope.streams - frozenset(message.streams)
        session.scope = Scope(remaining, scope.types, scope.area, scope.root, scope.units_filter_sa)
    streams = sorted(s.value for s in (session.scope.streams if session.scope else ()))
    session.outbox.reply(frame("unsubscribed", id=message.id, streams=streams))
