"""Every problem of a rejected body, not just the first.

Decoding (msgspec) stops at the first fault, which is right for the hot path. A publisher
fixing a request wants the whole list, so a rejected body is validated again against the
JSON Schemas generated from the same types, collecting every error with its JSON path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from jsonschema import Draft202012Validator, FormatChecker

from c2bus.core.codec import MALFORMED, EventDecoder
from c2bus.core.events import Envelope, type_tag
from c2bus.errors import InvalidEvent

TOO_DEEP = "nested too deeply to be an event"


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str
    #: the item's index in a batch
    index: int | None = None

    def as_dict(self, index: int | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "message": self.message}
        at = self.index if index is None else index
        if at is not None:
            doc["index"] = at
        return doc


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


class ProblemFinder:
    """Validators for a set of event types, selected by the event's ``type``."""

    def __init__(self, types: tuple[type[Envelope], ...]) -> None:
        checker = FormatChecker()
        self.validators = {
            type_tag(cls): Draft202012Validator(msgspec.json.schema(cls), format_checker=checker)
            for cls in types
        }

    def find(self, doc: Any, decoder_message: str) -> list[Problem]:
        if not isinstance(doc, dict):
            return [Problem("$", "expected a JSON object (a CloudEvent)")]
        kind = doc.get("type")
        validator = self.validators.get(kind) if isinstance(kind, str) else None
        if validator is None:
            allowed = ", ".join(sorted(self.validators))
            return [Problem("$.type", f"must be one of: {allowed}")]
        problems = [
            Problem(_json_path(err.absolute_path), err.message)
            for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        ]
        # The decoder is the authority: if the schema found nothing, report what it said.
        return problems or [Problem("$", decoder_message)]


def problems_of(
    finder: ProblemFinder, decoder: EventDecoder[Any], body: bytes, *, batch: bool, message: str
) -> list[Problem]:
    """Every problem of a body the decoder refused with ``message``: for a batch, those of
    each refused item, with its index. Nesting deeper than a validator recurses is one
    problem, never a crash."""
    try:
        return _problems(finder, decoder, body, batch, message)
    except RecursionError:
        return [Problem("$", TOO_DEEP)]


def _problems(
    finder: ProblemFinder, decoder: EventDecoder[Any], body: bytes, batch: bool, message: str
) -> list[Problem]:
    try:
        doc = msgspec.json.decode(body)
    except MALFORMED:
        return [Problem("$", message)]
    if not batch:
        return finder.find(doc, message)
    if not isinstance(doc, list):
        return [Problem("$", "expected a JSON array of CloudEvents")]
    problems: list[Problem] = []
    for index, item in enumerate(doc):
        try:
            decoder.decode_event(msgspec.json.encode(item))
        except InvalidEvent as item_exc:
            problems += [
                Problem(p.path, p.message, index) for p in finder.find(item, str(item_exc))
            ]
    return problems or [Problem("$", message)]
