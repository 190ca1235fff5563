"""JSON Schema documents generated from the event structs (the published contracts).

``c2bus schemas export`` writes them to ``schemas/``; a test regenerates them and fails if
the committed files differ, so the contracts and the code cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from c2bus.core.events import EVENT_TYPES, AnyEvent, Envelope, type_tag
from c2bus.core.policy.model import PolicyDocument
from c2bus.core.protocol import ClientMessage, ServerFrame

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
UNION_FILE = "c2bus-event.schema.json"
POLICY_FILE = "c2bus-policy-document.schema.json"
CONSOLE_FILE = "c2bus.v1.console-message.schema.json"
FRAME_FILE = "c2bus.v1.server-frame.schema.json"


def schema_file(cls: type[Envelope]) -> str:
    return f"{type_tag(cls)}.schema.json"


def _document(schema: dict[str, Any], schema_id: str, title: str, description: str) -> Any:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id,
        "title": title,
        "description": description,
        **schema,
    }


def generate() -> dict[str, Any]:
    """Every schema document, by file name."""
    docs: dict[str, Any] = {}
    for cls in EVENT_TYPES:
        tag = type_tag(cls)
        docs[schema_file(cls)] = _document(
            msgspec.json.schema(cls),
            f"urn:c2bus:schema:{tag}",
            tag,
            f"A c2bus {tag} event: CloudEvents 1.0 (JSON structured mode) with a security "
            "label (classification, releasableto extension attributes).",
        )
    docs[UNION_FILE] = _document(
        msgspec.json.schema(AnyEvent),
        "urn:c2bus:schema:event",
        "c2bus event",
        "Any c2bus event; the CloudEvents `type` attribute selects the data shape.",
    )
    docs[POLICY_FILE] = _document(
        msgspec.json.schema(PolicyDocument),
        "urn:c2bus:schema:policy-document",
        "c2bus alignment-policy document",
        "A versioned alignment-policy set as operators write it (YAML or JSON); see "
        "docs/policy.md.",
    )
    docs[CONSOLE_FILE] = _document(
        _cantco_says_why(msgspec.json.schema(ClientMessage)),
        "urn:c2bus:schema:console-message:v1",
        "c2bus.v1 console message",
        "A message a console sends a gateway over the c2bus.v1 WebSocket subprotocol; `op` "
        "selects the shape. See docs/gateway-protocol.md.",
    )
    docs[FRAME_FILE] = _document(
        msgspec.json.schema(ServerFrame),
        "urn:c2bus:schema:server-frame:v1",
        "c2bus.v1 server frame",
        "A frame a gateway sends a console over the c2bus.v1 WebSocket subprotocol; `op` "
        "selects the shape. See docs/gateway-protocol.md.",
    )
    return docs


def _cantco_says_why(schema: dict[str, Any]) -> dict[str, Any]:
    """What ``Ack.__post_init__`` checks and msgspec cannot say: CANTCO carries a reason
    that is not blank."""
    schema["$defs"]["Ack"]["if"] = {"properties": {"state": {"const": "CANTCO"}}}
    schema["$defs"]["Ack"]["then"] = {
        "required": ["reason"],
        "properties": {"reason": {"type": "string", "pattern": "\\S"}},
    }
    return schema


def render(doc: Any) -> str:
    """The canonical text of a schema file."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
