"""The console protocol, ``c2bus.v1`` (see docs/gateway-protocol.md).

Frames are JSON text messages with an ``op``. This module only parses client messages and
builds server frames; it does no I/O.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from ..domain.identity import Identity

SUBPROTOCOL = "c2bus.v1"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway uses (4000-4999 are for applications)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the gateway is shutting down
    POLICY = 1008  # token no longer valid
    TOKEN_EXPIRED = 4001  # the token expired during the session; reconnect with a fresh one
    REVOKED = 4003  # the token or its subject was revoked during the session
    SLOW_CONSUMER = 4008  # the console fell behind its buffer; reconnect and resume


class Stream(enum.Enum):
    SA = "sa"  # situational awareness the console may see
    DIRECTIVES = "directives"  # approved directives to or from the console's unit
    DECISIONS = "decisions"  # verdicts on directives the console's unit issued


CorrelationId = Annotated[str, Meta(max_length=128)]


class Subscribe(Struct, tag_field="op", tag="subscribe", forbid_unknown_fields=True):
    streams: Annotated[list[Stream], Meta(min_length=1)]
    id: CorrelationId = ""


class Unsubscribe(Struct, tag_field="op", tag="unsubscribe", forbid_unknown_fields=True):
    streams: Annotated[list[Stream], Meta(min_length=1)]
    id: CorrelationId = ""


class Ping(Struct, tag_field="op", tag="ping", forbid_unknown_fields=True):
    id: CorrelationId = ""


ClientMessage = Subscribe | Unsubscribe | Ping
_client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_encoder = msgspec.json.Encoder()


class BadMessage(Exception):
    """A client message that does not parse; carries the correlation id if one was sent."""

    def __init__(self, message: str, correlation_id: str = "") -> None:
        super().__init__(message)
        self.correlation_id = correlation_id


def parse_client_message(raw: str | bytes) -> ClientMessage:
    try:
        return _client_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        correlation = ""
        try:
            doc = msgspec.json.decode(raw)
            if isinstance(doc, dict) and isinstance(doc.get("id"), str):
                correlation = doc["id"][:128]
        except msgspec.DecodeError:
            pass
        raise BadMessage(str(exc), correlation) from exc


def frame(op: str, **fields: Any) -> str:
    return _encoder.encode({"op": op, **fields}).decode()


def welcome(session_id: str, identity: Identity, heartbeat_s: float) -> str:
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


def event_frame(stream: Stream, position: str, event_json: bytes) -> str:
    """An event frame, built once per event and sent to every console that may see it."""
    head = _encoder.encode({"op": "event", "stream": stream.value, "pos": position})
    return (head[:-1] + b',"event":' + event_json + b"}").decode()
