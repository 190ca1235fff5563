"""What the gateway remembers from the topics: the latest SA per entity, recent directives.

The latest-SA table feeds the snapshot a console gets on subscribing; the directive
directory lets a target console acknowledge a directive it was delivered (the gateway must
know the directive's target and label to accept and label the acknowledgement), and keeps
each directive's lifecycle state (:mod:`c2bus.core.lifecycle`): the steps read from the
status topic in its order, then the steps this gateway wrote that it has not read back yet.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from c2bus.core.events import (
    DirectiveEvent,
    DirectiveState,
    DirectiveStatusEvent,
    Envelope,
    event_type,
)
from c2bus.core.labels import SecurityLabel
from c2bus.core.lifecycle import FINAL, advance


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest SA event of one entity, as routed live."""

    event: Envelope
    label: SecurityLabel
    frame: bytes  # the live event frame (its ``pos`` is the event's position)


def sa_key(event: Envelope) -> str:
    """The entity an SA event is the state of: its type and key (a track, a unit's position)."""
    return f"{event_type(event)}|{event.key()}"


class LatestSa:
    def __init__(self, horizon: timedelta) -> None:
        self.horizon = horizon
        self.entries: dict[str, Latest] = {}

    def update(self, key: str, latest: Latest) -> None:
        # Per-key order is Kafka's, and it is what live consoles see: the later record is the
        # newer state, whatever time it is stamped with (a report stamped in the future must
        # not pin the snapshot; the gateway refuses those anyway).
        self.entries[key] = latest

    def current(self, now: datetime) -> Iterator[Latest]:
        """Entities whose latest state is within the horizon; older ones are dropped."""
        oldest = now - self.horizon
        stale = [k for k, v in self.entries.items() if v.event.time < oldest]
        for key in stale:
            del self.entries[key]
        return iter(list(self.entries.values()))

    def __len__(self) -> int:
        return len(self.entries)


class DirectiveDirectory:
    """The most recent approved directives by id (bounded: the oldest are forgotten), each
    with where its release was read: another record releasing the same id is a copy of it
    (a replay), and one decided before the oldest release forgotten can no longer be told
    from a copy, so it is refused as stale."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        #: id → (the directive, when it was approved: its record's time, epoch s, and the
        #: position of its release)
        self.directives: OrderedDict[str, tuple[DirectiveEvent, float, str]] = OrderedDict()
        #: id → when this gateway first delivered it to a console of its target (epoch s)
        self._delivered: dict[str, float] = {}
        #: when the newest release forgotten was decided
        self.forgotten_to: datetime | None = None
        #: id → the state the status topic's steps read so far left it in (bounded too)
        self.states: OrderedDict[str, DirectiveState] = OrderedDict()
        #: id → steps this gateway wrote and has not read back yet: (position, state)
        self._own: dict[str, list[tuple[str, DirectiveState]]] = {}
        #: (expires, id) of the directives remembered, soonest first
        self._expiries: list[tuple[datetime, str]] = []

    def add(self, directive: DirectiveEvent, approved_at: float, position: str = "") -> None:
        known = self.directives.get(directive.id)
        if known is None:
            self.directives[directive.id] = (directive, approved_at, position)
            heapq.heappush(self._expiries, (directive.data.expires, directive.id))
            if len(self._expiries) > 2 * self.capacity:  # of directives forgotten since
                self._expiries = [(d.data.expires, i) for i, (d, _, _) in self.directives.items()]
                heapq.heapify(self._expiries)
        self.directives.move_to_end(directive.id)
        while len(self.directives) > self.capacity:
            _, (gone, _, _) = self.directives.popitem(last=False)
            self._delivered.pop(gone.id, None)
            self._own.pop(gone.id, None)
            decided = gone.decidedat
            if decided is not None and (self.forgotten_to is None or decided > self.forgotten_to):
                self.forgotten_to = decided

    def replay_of(self, directive: DirectiveEvent, position: str) -> str | None:
        """Why a release read at ``position`` is not to be delivered: a copy of one read
        elsewhere, or too old to tell; None when it is the release itself."""
        known = self.directives.get(directive.id)
        if known is not None and known[2] != position:
            return f"replay: directive {directive.id} was released at {known[2]}"
        forgotten, decided = self.forgotten_to, directive.decidedat
        if known is None and forgotten is not None and decided is not None and decided <= forgotten:
            return "stale: decided before the oldest release this gateway remembers"
        return None

    def get(self, directive_id: str) -> DirectiveEvent | None:
        known = self.directives.get(directive_id)
        return known[0] if known else None

    def first_delivery(self, directive_id: str, now: float) -> float | None:
        """Note a delivery to a console of the target; on the first one here, return when
        the directive was approved (for the decided → delivered hop), else None."""
        known = self.directives.get(directive_id)
        if known is None or directive_id in self._delivered:
            return None
        self._delivered[directive_id] = now
        return known[1]

    def delivered_at(self, directive_id: str) -> float | None:
        """When this gateway first delivered the directive to its target, if it did."""
        return self._delivered.get(directive_id)

    # -- lifecycle ---------------------------------------------------------------------------

    def read_step(self, step: DirectiveStatusEvent, position: str) -> DirectiveState | None:
        """Fold a step read from the status topic at ``position`` into its directive's state
        (judged at the step's time); the new state, or None when the step is not a legal
        one there and changes nothing."""
        data = step.data
        known = self.directives.get(data.directive_id)
        expires = known[0].data.expires if known else None
        own = self._own.get(data.directive_id)
        if own:
            own[:] = [(at, state) for at, state in own if at != position]
        new = advance(self.states.get(data.directive_id), data.state, expires, step.time)
        if new is not None:
            self.states[data.directive_id] = new
            self.states.move_to_end(data.directive_id)
            while len(self.states) > self.capacity:
                self.states.popitem(last=False)
        return new

    def wrote(self, directive_id: str, state: DirectiveState, position: str) -> None:
        """This gateway wrote ``state`` at ``position``: in force for its checks until read."""
        self._own.setdefault(directive_id, []).append((position, state))

    def state(self, directive_id: str) -> DirectiveState | None:
        """The directive's state: the topic's steps read, then this gateway's own not read
        back yet (None: no step yet, the directive just decided)."""
        state = self.states.get(directive_id)
        for _, step in self._own.get(directive_id, ()):
            state = advance(state, step) or state
        return state

    def expire_again(self, directive: DirectiveEvent) -> None:
        """Look at ``directive`` again at the next :meth:`expired`."""
        heapq.heappush(self._expiries, (directive.data.expires, directive.id))

    def expired(self, now: datetime) -> list[DirectiveEvent]:
        """Directives remembered whose validity ended by ``now`` and that reached neither
        CANTCO nor HAVE_DO (nor EXPIRED already), each once."""
        due = []
        while self._expiries and self._expiries[0][0] <= now:
            _, directive_id = heapq.heappop(self._expiries)
            known = self.directives.get(directive_id)
            if known is not None and self.state(directive_id) not in FINAL:
                due.append(known[0])
        return due
