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

from c2bus.core.events import Envelope, type_tag


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def as_dict(self, index: int | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "message": self.message}
        if index is not None:
            doc["index"] = index
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
        validator = self.validators.get(doc.get("type"))  # type: ignore[arg-type]
        if validator is None:
            allowed = ", ".join(sorted(self.validators))
            return [Problem("$.type", f"must be one of: {allowed}")]
        problems = [
            Problem(_json_path(err.absolute_path), err.message)
            for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        ]
        # The decoder is the authority: if the schema found nothing, report what it said.
        return problems or [Problem("$", decoder_message)]
