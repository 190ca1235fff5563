"""The console protocol, ``c2bus.v1`` (see docs/gateway-protocol.md).

Frames are JSON text messages with an ``op``. This module only parses client messages and
builds server frames; it does no I/O. ``schemas/c2bus.v1.console-message.schema.json`` is
the JSON Schema of the client messages, generated from the structs below.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta, Struct

from c2bus.core.events import Parameters
from c2bus.core.fields import (
    EventId,
    GeoPoint,
    Identifier,
    Latitude,
    Longitude,
    ReleasableTo,
    Text,
    Timestamp,
)
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification

SUBPROTOCOL = "c2bus.v1"
#: The role a console needs to submit directives (acknowledging needs only to be the target;
#: approving, one of ``core.directives.APPROVER_ROLES``).
COMMANDER_ROLE = "commander"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway uses (4000-4999 are for applications)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the gateway is shutting down
    POLICY = 1008  # token no longer valid
    MESSAGE_TOO_BIG = 1009  # a message over MAX_FRAME_BYTES (sent by the WebSocket library)
    TOKEN_EXPIRED = 4001  # the token expired during the session; reconnect with a fresh one
    REVOKED = 4003  # the token or its subject was revoked during the session
    SLOW_CONSUMER = 4008  # the console fell behind its buffer; reconnect and resume
    SCOPE_CHANGED = 4009  # a policy version moved the subscribed units away; subscribe again


class Stream(enum.Enum):
    SA = "sa"  # situational awareness the console may see
    DIRECTIVES = "directives"  # approved directives to or from the console's units
    DECISIONS = "decisions"  # verdicts on directives the console's units issued
    STATUS = "status"  # lifecycle steps of directives to or from the console's units

    # Members are singletons: hashing by identity keeps the check of a console's streams
    # (once per console and event) in C, where Enum's own hash calls Python.
    __hash__ = object.__hash__


CorrelationId = Annotated[str, Meta(max_length=128)]
#: ``<topic>/<partition>`` → the offset of the last event received from that partition.
Positions = dict[Annotated[str, Meta(max_length=300)], Annotated[int, Meta(ge=-1)]]


class Area(Struct, frozen=True, forbid_unknown_fields=True):
    """An area of interest: a latitude/longitude box (``west > east`` crosses 180°;
    ``south`` at most ``north``)."""

    south: Latitude
    west: Longitude
    north: Latitude
    east: Longitude

    def __post_init__(self) -> None:
        if self.south > self.north:
            raise ValueError(f"south ({self.south:g}) is north of north ({self.north:g})")

    def contains(self, lat: float, lon: float) -> bool:
        if not self.south <= lat <= self.north:
            return False
        if self.west <= self.east:
            return self.west <= lon <= self.east
        return lon >= self.west or lon <= self.east


class Subscribe(Struct, tag_field="op", tag="subscribe", forbid_unknown_fields=True):
    """Replace the session's subscription. Without ``positions`` the console gets the
    latest-SA snapshot (unless ``snapshot`` is false), then live events; with them, the
    events it missed since those positions, then live events."""

    streams: Annotated[list[Stream], Meta(min_length=1)]
    id: CorrelationId = ""
    types: Annotated[list[Annotated[str, Meta(max_length=128)]], Meta(max_length=64)] | None = None
    area: Area | None = None
    units: Identifier | None = None
    positions: Positions | None = None
    snapshot: bool = True


class Unsubscribe(Struct, tag_field="op", tag="unsubscribe", forbid_unknown_fields=True):
    streams: Annotated[list[Stream], Meta(min_length=1)]
    id: CorrelationId = ""


class Ping(Struct, tag_field="op", tag="ping", forbid_unknown_fields=True):
    id: CorrelationId = ""


class DirectiveBody(Struct, frozen=True, forbid_unknown_fields=True):
    """A directive as a console submits it: the issuer is the console's unit, never this."""

    kind: Identifier
    target: Identifier
    expires: Timestamp
    valid_from: Timestamp | None = None
    area: Annotated[list[GeoPoint], Meta(min_length=3, max_length=1024)] | None = None
    text: Text = ""
    parameters: Parameters = msgspec.field(default_factory=dict)


class Submit(Struct, tag_field="op", tag="submit", forbid_unknown_fields=True):
    directive: DirectiveBody
    classification: Classification
    releasableto: ReleasableTo
    id: CorrelationId = ""
    #: Optional, to make a retried submission recognisable (a second use is denied as a
    #: replay); by default the gateway makes one.
    directive_id: EventId | None = None


class Approve(Struct, tag_field="op", tag="approve", forbid_unknown_fields=True):
    """The console's user approves a held directive (roles ``approver`` or
    ``red-card-holder``): the gateway writes the approval with the user's verified identity
    and signs it as the edge that authenticated them. Whether it counts is the enforcer's
    to decide; the answer says only that it was written."""

    directive_id: EventId
    #: the directive's target unit: the approval is keyed by it, so it reaches the
    #: directive's partition
    target: Identifier
    classification: Classification
    releasableto: ReleasableTo
    id: CorrelationId = ""
    comment: Text = ""


class Ack(Struct, tag_field="op", tag="ack", forbid_unknown_fields=True):
    """The target unit's answer to a directive delivered to it (CANTCO says why)."""

    directive_id: EventId
    state: Literal["WILCO", "CANTCO", "HAVE_DO"]
    id: CorrelationId = ""
    reason: (
        Annotated[
            Text,
            Meta(description="Why the unit cannot comply: required with CANTCO, not blank"),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if self.state == "CANTCO" and not (self.reason or "").strip():
            raise ValueError("CANTCO needs a reason")


# --- server frames (built by ``frame``; these structs are their published contract) -------

PositionsOut = dict[str, int]


class IdentityOut(Struct, frozen=True):
    sub: str
    nation: str
    clearance: Classification
    unit: str
    roles: list[str]


class WelcomeFrame(Struct, tag_field="op", tag="welcome", forbid_unknown_fields=True):
    protocol: Literal["c2bus.v1"]
    session: str
    heartbeat_s: float
    identity: IdentityOut


class SubscribedFrame(Struct, tag_field="op", tag="subscribed", forbid_unknown_fields=True):
    id: str
    streams: list[Stream]
    mode: Literal["snapshot", "resume", "live"]
    positions: PositionsOut


class UnsubscribedFrame(Struct, tag_field="op", tag="unsubscribed", forbid_unknown_fields=True):
    id: str
    streams: list[Stream]


class EventFrame(Struct, tag_field="op", tag="event", forbid_unknown_fields=True):
    """``event`` is the CloudEvent as on the topic (``c2bus-event.schema.json``)."""

    stream: Stream
    pos: str
    event: dict[str, Any]


class StateFrame(Struct, tag_field="op", tag="state", forbid_unknown_fields=True):
    """An entity's latest state in a snapshot: an event frame by another name."""

    stream: Literal["sa"]
    pos: str
    event: dict[str, Any]


class SnapshotEndFrame(Struct, tag_field="op", tag="snapshot_end", forbid_unknown_fields=True):
    id: str
    count: int
    positions: PositionsOut


class ResyncFrame(Struct, tag_field="op", tag="resync", forbid_unknown_fields=True):
    id: str
    partitions: list[str]
    reason: str


class LiveFrame(Struct, tag_field="op", tag="live", forbid_unknown_fields=True):
    id: str


class PongFrame(Struct, tag_field="op", tag="pong", forbid_unknown_fields=True):
    id: str


class SubmittedFrame(Struct, tag_field="op", tag="submitted", forbid_unknown_fields=True):
    id: str
    directive_id: str
    pos: str


class ApprovalFrame(Struct, tag_field="op", tag="approval", forbid_unknown_fields=True):
    """An approval written at ``pos`` (not that it counts: the enforcer decides that)."""

    id: str
    directive_id: str
    pos: str


class AckedFrame(Struct, tag_field="op", tag="acked", forbid_unknown_fields=True):
    id: str
    directive_id: str
    state: Literal["WILCO", "CANTCO", "HAVE_DO"]
    pos: str


ErrorCode = Literal[
    "bad_request",
    "too_large",
    "forbidden",
    "bad_position",
    "unknown_directive",
    "illegal_transition",
    "rate_limited",
    "unavailable",
]
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)


class ErrorFrame(Struct, tag_field="op", tag="error", forbid_unknown_fields=True):
    id: str
    code: ErrorCode
    message: str
    retry_after_ms: int | None = None


ServerFrame = (
    WelcomeFrame
    | SubscribedFrame
    | UnsubscribedFrame
    | EventFrame
    | StateFrame
    | SnapshotEndFrame
    | ResyncFrame
    | LiveFrame
    | PongFrame
    | SubmittedFrame
    | ApprovalFrame
    | AckedFrame
    | ErrorFrame
)

ClientMessage = Subscribe | Unsubscribe | Ping | Submit | Approve | Ack
CLIENT_MESSAGES: tuple[type[Struct], ...] = (Subscribe, Unsubscribe, Ping, Submit, Approve, Ack)
_client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_encoder = msgspec.json.Encoder()


#: The longest request a console may send, in UTF-8 bytes: longer ones get a ``too_large``
#: error (not read) and the connection stays open. The largest message the console-message
#: schema accepts, every character escaped as JSON allows, is well within it (a unit test
#: builds it).
MAX_REQUEST_BYTES = 256 * 1024
#: The longest WebSocket message the gateway reads at all: a longer one closes the
#: connection with 1009 (message too big) before it is read.
MAX_FRAME_BYTES = 1024 * 1024


class BadMessage(Exception):
    """A client message refused as it stands (``code``: ``bad_request`` or ``too_large``);
    carries the correlation id if one was sent and could be read."""

    def __init__(self, message: str, correlation_id: str = "", code: str = "bad_request") -> None:
        super().__init__(message)
        self.correlation_id = correlation_id
        self.code = code


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """A console's message, or :class:`BadMessage` with its correlation id where it has
    one (anything that does not parse, nesting too deep to decode included; a binary
    frame, ``bytes``: the protocol is text; one over :data:`MAX_REQUEST_BYTES`)."""
    if isinstance(raw, bytes):
        raise BadMessage("a binary frame: messages are text frames (UTF-8 JSON)", _id_of(raw))
    size = len(raw) if raw.isascii() else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_REQUEST_BYTES:  # not read, so its id is not known either
        raise BadMessage(
            f"a request of {size} bytes: at most {MAX_REQUEST_BYTES}", "", code="too_large"
        )
    try:
        return _client_decoder.decode(raw)
    except RecursionError as exc:
        raise BadMessage("nested too deeply to be a message", "") from exc
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadMessage(str(exc), _id_of(raw)) from exc


def _id_of(raw: str | bytes) -> str:
    """The correlation id of a message refused, where one can be read ("" if none)."""
    try:
        doc = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return ""
    if isinstance(doc, dict) and isinstance(doc.get("id"), str):
        return str(doc["id"])[:128]
    return ""


def frame(op: str, **fields: Any) -> bytes:
    """A server frame, UTF-8 JSON (sent as a text message)."""
    return _encoder.encode({"op": op, **fields})


def error(correlation_id: str, code: str, message: str, **fields: Any) -> bytes:
    return frame("error", id=correlation_id, code=code, message=message, **fields)


def welcome(session_id: str, identity: Identity, heartbeat_s: float) -> bytes:
    return frame(
        "welcome",
        protocol=SUBPROTOCOL,
        session=session_id,
        heartbeat_s=heartbeat_s,
        identity={
            "sub": identity.subject,
            "nation": identity.nation,
            "clearance": identity.clearance.value,
            "unit": identity.unit,
            "roles": sorted(identity.roles),
        },
    )


_EVENT_HEAD = b'{"op":"event"'
_STATE_HEAD = b'{"op":"state"'


def event_frame(stream: Stream, position: str, event_json: bytes) -> bytes:
    """An event frame, built once per event and sent to every console that may see it."""
    head = _encoder.encode({"op": "event", "stream": stream.value, "pos": position})
    return head[:-1] + b',"event":' + event_json + b"}"


def state_frame(event: bytes) -> bytes:
    """The snapshot form of an event frame: the same fields under ``op: state``."""
    return _STATE_HEAD + event[len(_EVENT_HEAD) :]


def is_event_frame(message: bytes) -> bool:
    return message.startswith(_EVENT_HEAD)


def position_key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def parse_position_key(key: str) -> tuple[str, int] | None:
    topic, _, partition = key.rpartition("/")
    if not topic or not partition.isdigit():
        return None
    return topic, int(partition)
