"""Console sessions, their bounded outboxes, and the routing of events to them.

Every session has an outbox bounded in bytes. Routing decides, per event, which sessions
may receive it (:func:`scope.entitled`) and offers the pre-built frame to each. Under
pressure (the outbox past half its bound) a new SA frame replaces the one still waiting
for the same entity: the console gets the latest state, positions still increase. A frame
that does not fit even so marks the session as overflowed, and it is closed with the
slow-consumer code: directives are never dropped silently.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from c2bus.core.events import DirectiveEvent, PositionEvent, TrackEvent
from c2bus.core.identity import Identity
from c2bus.core.protocol import Stream, is_event_frame, state_frame
from c2bus.services.gateway.scope import Routed, Scope, UnitTree, entitled

TopicPartition = tuple[str, int]


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

    def __init__(self, limit_bytes: int, on_conflate: Callable[[], None] | None = None) -> None:
        self.limit = limit_bytes
        self.conflate_at = limit_bytes // 2
        self.replies: deque[bytes] = deque()
        self.snapshot: deque[bytes] = deque()  # event frames (sent as state) and the end marker
        self.entries: deque[Entry] = deque()
        self.pending_sa: dict[str, Entry] = {}
        self.bytes = 0
        self.dead = 0  # replaced entries still in ``entries``
        self.on_conflate = on_conflate
        self.overflow = asyncio.Event()
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()

    @property
    def overflowed(self) -> bool:
        return self.overflow.is_set()

    def reply(self, frame: bytes) -> None:
        if len(self.replies) >= self.MAX_REPLIES:
            self.overflow.set()
        self.replies.append(frame)
        self.wake.set()

    def put(self, frame: bytes, key: str | None = None, note: DirectiveEvent | None = None) -> bool:
        """Queue a frame (``key``: the SA entity it is the state of); False on overflow."""
        if self.overflow.is_set():
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
            self.overflow.set()
            self.wake.set()
            return False
        entry = Entry(frame, key, note)
        self.entries.append(entry)
        if key is not None:
            self.pending_sa[key] = entry
        self.bytes += size
        if self.bytes > self.conflate_at:
            self.drained.clear()
        self.wake.set()
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
                self.drained.set()
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
        self.drained.set()


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
    def __init__(self) -> None:
        self.sessions: set[Session] = set()
        self.tree = UnitTree()

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
