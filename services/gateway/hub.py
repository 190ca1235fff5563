"""Console sessions and the routing of events to them.

Every session has a bounded queue. Routing decides, per event, which sessions may receive
it (label within clearance and released to the nation, stream subscribed, scope matching
the console's unit) and offers the pre-built frame to each. A session whose queue is full is
marked for closing with the slow-consumer code: nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from ..domain.events import DecisionEvent, DirectiveEvent, Envelope
from ..domain.identity import Identity
from ..domain.labels import SecurityLabel
from .protocol import Stream


@dataclass(eq=False)
class Session:
    identity: Identity
    queue_max: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    streams: set[Stream] = field(default_factory=set)
    queue: asyncio.Queue[str] = field(init=False)
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.queue_max)

    def offer(self, message: str) -> bool:
        if self.overflowed.is_set():
            return False
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed.set()
            return False
        return True


def in_scope(identity: Identity, stream: Stream, event: Envelope) -> bool:
    """Whether an event of ``stream`` concerns this console (the label is checked apart)."""
    if stream is Stream.SA:
        return True
    if stream is Stream.DIRECTIVES and isinstance(event, DirectiveEvent):
        return identity.unit in (event.data.target, event.data.issuer)
    if stream is Stream.DECISIONS and isinstance(event, DecisionEvent):
        return identity.unit == event.data.issuer
    return False


class Hub:
    def __init__(self) -> None:
        self.sessions: set[Session] = set()

    def add(self, session: Session) -> None:
        self.sessions.add(session)

    def remove(self, session: Session) -> None:
        self.sessions.discard(session)

    def route(self, stream: Stream, event: Envelope, label: SecurityLabel, message: str) -> int:
        """Offer ``message`` to every session entitled to it; returns how many took it."""
        delivered = 0
        for session in self.sessions:
            if stream not in session.streams:
                continue
            if not session.identity.may_see(label):  # fail closed on every message
                continue
            if not in_scope(session.identity, stream, event):
                continue
            if session.offer(message):
                delivered += 1
        return delivered
