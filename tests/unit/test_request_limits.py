"""The console-message schema and the gateway's request limit agree: the largest submit the
schema accepts, every character escaped as JSON allows, is read; a longer request is
refused as ``too_large`` without being read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from c2bus.core.protocol import (
    MAX_FRAME_BYTES,
    MAX_REQUEST_BYTES,
    BadMessage,
    Submit,
    parse_client_message,
)
from tests.conftest import SCHEMAS, load

#: A character JSON can only write as a surrogate pair escape, 12 bytes (ensure_ascii).
ASTRAL = "\U0001f6e1"
#: Numbers as long as shortest round-trip formatting writes them.
POINT = {"lat": -89.12345678901234, "lon": -179.12345678901234, "alt_m": -1.2345678901234567e308}
IDENT = "A" * 127 + "Z"
STAMP = "2026-12-03T17:00:00.123456+00:00"


def largest_submit() -> dict[str, Any]:
    """Every bound of the submit schema at its maximum."""
    return {
        "op": "submit",
        "id": "i" * 128,
        "classification": "COSMIC TOP SECRET",
        "releasableto": "NATO",
        "directive_id": "d" * 256,
        "directive": {
            "kind": IDENT,
            "target": IDENT.lower(),
            "expires": STAMP,
            "valid_from": STAMP,
            "area": [POINT] * 1024,
            "text": ASTRAL * 4096,
            "parameters": {f"{n:02d}{IDENT[2:]}": ASTRAL * 128 for n in range(32)},
        },
    }


def test_the_largest_submit_the_schema_accepts_fits_the_request_limit() -> None:
    doc = largest_submit()
    schema = load(SCHEMAS / "c2bus.v1.console-message.schema.json")
    Draft202012Validator(schema).validate(doc)
    raw = json.dumps(doc)  # ensure_ascii: each astral character as 12 bytes
    assert len(raw.encode()) <= MAX_REQUEST_BYTES
    assert isinstance(parse_client_message(raw), Submit)


@pytest.mark.parametrize(
    "overreach",
    [
        lambda d: d["directive"].update(area=[POINT] * 1025),
        lambda d: d["directive"].update(text=ASTRAL * 4097),
        lambda d: d["directive"]["parameters"].update(extra=1),
        lambda d: d["directive"]["parameters"].update({"00" + IDENT[2:]: ASTRAL * 129}),
    ],
    ids=["area", "text", "parameters", "parameter-value"],
)
def test_one_step_past_a_bound_is_bad_request(overreach: Any) -> None:
    doc = largest_submit()
    overreach(doc)
    with pytest.raises(BadMessage) as refused:
        parse_client_message(json.dumps(doc, ensure_ascii=False))
    assert refused.value.code == "bad_request"
    assert refused.value.correlation_id == "i" * 128


def test_a_request_over_the_limit_is_too_large_and_not_read() -> None:
    raw = json.dumps({"op": "ping", "id": "p", "pad": " " * MAX_REQUEST_BYTES})
    with pytest.raises(BadMessage, match=f"at most {MAX_REQUEST_BYTES}") as refused:
        parse_client_message(raw)
    assert refused.value.code == "too_large"
    assert refused.value.correlation_id == ""  # not read, so not known
    # counted in UTF-8 bytes, not characters
    wide = '{"op": "ping", "id": "' + "é" * (MAX_REQUEST_BYTES // 2) + '"}'
    with pytest.raises(BadMessage) as refused:
        parse_client_message(wide)
    assert refused.value.code == "too_large"


def test_the_frame_limit_is_above_the_request_limit() -> None:
    # between the two a console gets an error frame; only past the frame limit is it closed
    assert MAX_FRAME_BYTES >= 4 * MAX_REQUEST_BYTES


@pytest.mark.parametrize(
    ("ack", "accepted"),
    [
        ({"state": "WILCO"}, True),
        ({"state": "CANTCO", "reason": "no fuel"}, True),
        ({"state": "CANTCO"}, False),
        ({"state": "CANTCO", "reason": "  "}, False),
        ({"state": "CANTCO", "reason": None}, False),
        ({"state": "HAVE_DO", "reason": "done at 0600"}, True),
    ],
)
def test_cantco_says_why_in_the_schema_as_in_the_parser(
    ack: dict[str, Any], accepted: bool
) -> None:
    doc = {"op": "ack", "id": "a1", "directive_id": "d", **ack}
    schema = Draft202012Validator(load(SCHEMAS / "c2bus.v1.console-message.schema.json"))
    assert schema.is_valid(doc) is accepted
    if accepted:
        parse_client_message(json.dumps(doc))
    else:
        with pytest.raises(BadMessage, match="CANTCO needs a reason"):
            parse_client_message(json.dumps(doc))
