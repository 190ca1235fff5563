"""Decode and encode events: bytes in, typed events out, or a precise :class:`InvalidEvent`.

Decoders are built once per accepted type set and reused: decoding validates while it
parses (msgspec), so the hot path never builds an untyped dict first.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from c2bus.core.events import AnyEvent, Envelope
from c2bus.errors import InvalidEvent

E = TypeVar("E")

_PATH_SEPARATOR = " - at `"
#: What msgspec raises for bytes that are no JSON: malformed, or a string in it that is not
#: UTF-8 (msgspec raises that one as it is, not as a DecodeError).
MALFORMED = (msgspec.DecodeError, UnicodeDecodeError)
_encoder = msgspec.json.Encoder()


class EventDecoder(Generic[E]):
    """A reusable decoder for one event type or union, raising :class:`InvalidEvent`."""

    __slots__ = ("_decoder",)

    def __init__(self, event_type: Any) -> None:
        self._decoder: msgspec.json.Decoder[E] = msgspec.json.Decoder(event_type)

    def decode_event(self, raw: bytes | bytearray | memoryview | str) -> E:
        try:
            return self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise _invalid(str(exc)) from exc
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"malformed JSON: {exc}") from exc
        except UnicodeDecodeError as exc:  # msgspec's, for a string that is not UTF-8
            raise InvalidEvent(f"malformed JSON: a string is not UTF-8 ({exc.reason})") from exc
        except RecursionError as exc:  # nesting deeper than the decoder recurses
            raise InvalidEvent("nested too deeply to be an event") from exc


def _invalid(message: str) -> InvalidEvent:
    reason, sep, rest = message.partition(_PATH_SEPARATOR)
    if not sep:
        return InvalidEvent(message)
    return InvalidEvent(reason, rest.rstrip("`"))


ANY_EVENT: EventDecoder[AnyEvent] = EventDecoder(AnyEvent)


def decode_event(raw: bytes | bytearray | memoryview | str) -> AnyEvent:
    """Decode any c2bus event; raises :class:`InvalidEvent` with the JSON path of the fault."""
    return ANY_EVENT.decode_event(raw)


def encode_event(event: Envelope) -> bytes:
    """Encode an event as CloudEvents JSON (structured mode)."""
    return _encoder.encode(event)


def to_builtins(event: Envelope) -> Any:
    """The event as plain JSON-compatible Python values."""
    return msgspec.to_builtins(event)
