"""What a console may receive: one check, used on the live, snapshot and resume paths alike.

An event reaches a console only when all of these hold (fail closed: anything unknown is
refused):

- its stream is subscribed and its CloudEvents type is among the subscribed types;
- its security label is within the console's clearance and released to its nation;
- it is in the subscribed scope: SA with a position inside the area of interest, own-force
  SA of units in the subscribed unit subtree (when one was given), and directives,
  decisions and lifecycle steps whose issuer or target (decisions and DECIDED steps:
  issuer) is in the unit subtree, which is the console's own unit or one below it in the
  command structure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from c2bus.core.events import (
    TYPE_TAGS,
    DecisionEvent,
    DirectiveEvent,
    DirectiveState,
    DirectiveStatusEvent,
    Envelope,
    PositionEvent,
    TrackEvent,
    UnitStatusEvent,
)
from c2bus.core.identity import Identity
from c2bus.core.labels import SecurityLabel
from c2bus.core.protocol import Area, Stream

STREAM_TYPES: dict[Stream, frozenset[str]] = {
    Stream.SA: frozenset(TYPE_TAGS[c] for c in (TrackEvent, PositionEvent, UnitStatusEvent)),
    Stream.DIRECTIVES: frozenset({TYPE_TAGS[DirectiveEvent]}),
    Stream.DECISIONS: frozenset({TYPE_TAGS[DecisionEvent]}),
    Stream.STATUS: frozenset({TYPE_TAGS[DirectiveStatusEvent]}),
}


class UnitTree:
    """The command structure as the gateway knows it: each unit's chain of superiors.

    Without a policy the tree is empty and a unit's subtree is the unit alone.
    """

    def __init__(self, superiors: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.superiors: Mapping[str, tuple[str, ...]] = superiors or {}

    def within(self, unit: str, root: str) -> bool:
        """Whether ``unit`` is ``root`` or below it."""
        return unit == root or root in self.superiors.get(unit, ())


@dataclass(frozen=True, slots=True)
class Scope:
    streams: frozenset[Stream]
    types: frozenset[str] | None  # None: every type of the subscribed streams
    area: Area | None
    root: str  # the unit subtree: the console's unit or one below it
    units_filter_sa: bool  # own-force SA limited to the subtree (the console asked for it)


class Routed(NamedTuple):
    """An event decoded once for routing: its stream, label, frame and SA entity key."""

    stream: Stream
    event: Envelope
    label: SecurityLabel
    message: bytes  # the event frame, shared by every console it goes to
    key: str | None  # SA: the entity the event is the state of


def entitled(identity: Identity, scope: Scope, tree: UnitTree, routed: Routed) -> bool:
    """Whether this console may be sent this event (see the module docstring)."""
    stream, event = routed.stream, routed.event
    if stream not in scope.streams:
        return False
    if scope.types is not None and TYPE_TAGS.get(type(event)) not in scope.types:
        return False
    # The cheap scope checks first (an area of interest turns most SA away), then the label.
    return in_scope(scope, tree, stream, event) and identity.may_see(routed.label)


def in_scope(scope: Scope, tree: UnitTree, stream: Stream, event: Envelope) -> bool:
    """The subscription's area and unit subtree (streams and types checked already)."""
    root = scope.root
    if stream is Stream.SA:
        if isinstance(event, TrackEvent):
            point = event.data.position
            return scope.area is None or scope.area.contains(point.lat, point.lon)
        if isinstance(event, PositionEvent):
            point = event.data.position
            if scope.area is not None and not scope.area.contains(point.lat, point.lon):
                return False
            return not scope.units_filter_sa or tree.within(event.data.unit_id, root)
        if isinstance(event, UnitStatusEvent):
            return not scope.units_filter_sa or tree.within(event.data.unit_id, root)
        return False
    if stream is Stream.DIRECTIVES and isinstance(event, DirectiveEvent):
        return tree.within(event.data.target, root) or tree.within(event.data.issuer, root)
    if stream is Stream.DECISIONS and isinstance(event, DecisionEvent):
        return tree.within(event.data.issuer, root)
    if stream is Stream.STATUS and isinstance(event, DirectiveStatusEvent):
        if event.data.state is DirectiveState.DECIDED:  # like decisions: a denial is not
            return tree.within(event.data.issuer, root)  # the target's to see
        return tree.within(event.data.target, root) or tree.within(event.data.issuer, root)
    return False
