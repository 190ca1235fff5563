"""The typed event contracts: decoding validates, encoding round-trips, keys are right."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from c2bus.core.codec import EventDecoder, decode_event, encode_event
from c2bus.core.events import (
    ApprovalEvent,
    DecisionEvent,
    DirectiveEvent,
    DirectiveStatusEvent,
    GeoPoint,
    PolicySetEvent,
    PositionEvent,
    SaEvent,
    TrackData,
    TrackDomain,
    TrackEvent,
    UnitStatusEvent,
    issuer_scoped,
    type_tag,
)
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.errors import InvalidEvent
from tests.conftest import VALID_EXAMPLES

KEYS = {
    "sa-track": (TrackEvent, "TRK-4711"),
    "sa-position": (PositionEvent, "DEU-PZGRENBTL-122"),
    "sa-unit-status": (UnitStatusEvent, "POL-12BDE"),
    "directive": (DirectiveEvent, "NLD-11AMB"),
    "directive-approval": (ApprovalEvent, "POL-12BDE"),
    "decision": (DecisionEvent, "d-2026-11-26-0001"),
    "directive-status": (DirectiveStatusEvent, "d-2026-11-26-0001"),
    "policy-set": (PolicySetEvent, "alliance-main"),
}


def test_every_event_type_has_a_valid_example() -> None:
    assert sorted(p.stem for p in VALID_EXAMPLES) == sorted(KEYS)


@pytest.mark.parametrize("name", sorted(KEYS))
def test_examples_decode_to_their_type_with_the_documented_key(
    name: str, valid_example: Any
) -> None:
    cls, key = KEYS[name]
    event = decode_event(json.dumps(valid_example(name)))
    assert type(event) is cls
    assert event.key() == key


@pytest.mark.parametrize("name", sorted(KEYS))
def test_encode_decode_round_trip_is_lossless(name: str, valid_example: Any) -> None:
    event = decode_event(json.dumps(valid_example(name)))
    again = decode_event(encode_event(event))
    assert again == event
    assert json.loads(encode_event(again)) == json.loads(encode_event(event))


def test_label_is_parsed_from_the_extension_attributes(valid_example: Any) -> None:
    doc = valid_example("sa-position")
    event = decode_event(json.dumps(doc))
    assert event.label.classification is Classification.NATO_RESTRICTED
    assert event.label.releasable_to == {"DEU", "NLD", "POL"}


def test_encoded_event_is_a_cloudevent_in_structured_mode() -> None:
    event = TrackEvent(
        specversion="1.0",
        id="e-1",
        source="urn:c2bus:test",
        time=datetime(2026, 11, 26, 7, 0, tzinfo=UTC),
        classification=Classification.NATO_SECRET,
        releasableto="NATO",
        data=TrackData(track_id="T1", position=GeoPoint(lat=1.0, lon=2.0), domain=TrackDomain.AIR),
    )
    doc = json.loads(encode_event(event))
    assert doc["specversion"] == "1.0"
    assert doc["type"] == "c2bus.sa.track.v1" == type_tag(TrackEvent)
    assert doc["time"] == "2026-11-26T07:00:00Z"
    assert doc["classification"] == "NATO SECRET"
    assert doc["releasableto"] == "NATO"
    assert doc["data"]["position"] == {"lat": 1.0, "lon": 2.0}
    assert "subject" not in doc  # unset optional attributes are omitted, not null


def test_time_keeps_its_offset(valid_example: Any) -> None:
    doc = valid_example("sa-track")
    doc["time"] = "2026-11-26T09:00:00+02:00"
    event = decode_event(json.dumps(doc))
    assert event.time == datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    assert event.time.utcoffset() == timedelta(hours=2)


def test_a_narrow_decoder_rejects_other_event_types(valid_example: Any) -> None:
    sa_only: EventDecoder[SaEvent] = EventDecoder(SaEvent)
    assert isinstance(sa_only.decode_event(json.dumps(valid_example("sa-track"))), TrackEvent)
    with pytest.raises(InvalidEvent) as err:
        sa_only.decode_event(json.dumps(valid_example("directive")))
    assert err.value.path == "$.type"


def test_unknown_data_fields_are_rejected_but_unknown_extensions_are_ignored(
    valid_example: Any,
) -> None:
    doc = valid_example("sa-track")
    doc["someextension"] = "x"  # CloudEvents extensions we do not know are ignored
    decode_event(json.dumps(doc))
    doc["data"]["lat"] = 1.0  # a typo inside our own data is an error
    with pytest.raises(InvalidEvent) as err:
        decode_event(json.dumps(doc))
    assert err.value.path == "$.data"
    assert "unknown field `lat`" in err.value.reason


DEEP = b"[" * 10_000 + b"]" * 10_000


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[]",
        b"null",
        b"\xff\xfe",
        b'{"specversion": 1}',
        DEEP,
        b'{"specversion": "1.0", "data": ' + DEEP + b"}",
    ],
)
def test_garbage_is_an_invalid_event_not_a_crash(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode_event(raw)


@given(st.binary(max_size=256))
def test_arbitrary_bytes_either_decode_or_raise_invalid_event(raw: bytes) -> None:
    try:
        decode_event(raw)
    except InvalidEvent as exc:
        assert str(exc)


@given(st.dictionaries(st.sampled_from(["specversion", "id", "type", "time", "data"]), st.text()))
def test_partial_envelopes_are_rejected(doc: dict[str, str]) -> None:
    with pytest.raises(InvalidEvent):
        decode_event(msgspec.json.encode(doc))


def test_a_directive_id_is_its_issuers_alone() -> None:
    """Edges scope the id a submitter chose to its issuer: one unit cannot take (and so
    replay-block) another unit's next id; a resubmission with the scoped id stays as it is."""
    assert issuer_scoped("MNC-NE", "d-42") == "MNC-NE~d-42"
    assert issuer_scoped("MNC-NE", "MNC-NE~d-42") == "MNC-NE~d-42"
    assert issuer_scoped("POL-12BDE", "MNC-NE~d-42") == "POL-12BDE~MNC-NE~d-42"
    # no unit id holds the separator, so two issuers' ids never meet
    assert issuer_scoped("A/B", "C") != issuer_scoped("A", "B/C")
    with pytest.raises(ValueError, match="longer than 256"):
        issuer_scoped("MNC-NE", "x" * 250)


def test_an_sa_publisher_names_tracks_in_its_own_namespace_only() -> None:
    """The ingest scopes a track id to its publisher's unit, so two sensors' tracks of the
    same name are two entities; an id already in the namespace of a unit the publisher acts
    for stays, one in any other unit's namespace is refused (None)."""
    roles = frozenset({"sa-publisher"})
    radar = Identity("radar", "DEU", Classification.NATO_SECRET, "DEU-BTL", roles)
    relay = Identity(
        "bft", "DEU", Classification.NATO_SECRET, "BRIDGE", roles, frozenset({"POL-BDE"})
    )
    assert radar.in_namespace("TRK-1") == "DEU-BTL~TRK-1"
    assert radar.in_namespace("DEU-BTL~TRK-1") == "DEU-BTL~TRK-1"
    assert radar.in_namespace("POL-BDE~TRK-1") is None
    assert relay.in_namespace("POL-BDE~TRK-1") == "POL-BDE~TRK-1"
    assert relay.in_namespace("TRK-1") == "BRIDGE~TRK-1"
    assert relay.acting() == ("BRIDGE", "POL-BDE")
    assert (radar.may_act_for("DEU-BTL"), radar.may_act_for("POL-BDE")) == (True, False)
    # what it yields is what the schema takes, and nothing else
    decoder = msgspec.json.Decoder(TrackData)
    doc = {"position": {"lat": 1.0, "lon": 2.0}, "domain": "AIR"}
    for good in ("DEU-BTL~TRK-1", "TRK-1"):
        decoder.decode(msgspec.json.encode(doc | {"track_id": good}))
    for bad in ("a~b~c", "~TRK-1", "DEU-BTL~", "x" * 129 + "~T"):
        with pytest.raises(msgspec.ValidationError):
            decoder.decode(msgspec.json.encode(doc | {"track_id": bad}))
    with pytest.raises(ValueError, match="namespace"):
        radar.in_namespace("T" * 129)
    unnamed = Identity("radar", "DEU", Classification.NATO_SECRET, "no unit!", roles)
    with pytest.raises(ValueError, match="namespace"):
        unnamed.in_namespace("TRK-1")


@pytest.mark.parametrize("name", sorted(KEYS))
def test_invalid_utf8_inside_a_string_is_an_invalid_event(name: str, valid_example: Any) -> None:
    """A byte that is not UTF-8 inside the id (JSON that otherwise parses) is refused as an
    invalid event like any other bad input, never an exception of another kind."""
    raw = json.dumps(valid_example(name)).encode()
    at = raw.index(b'"id": "') + len(b'"id": "')
    broken = raw[:at] + b"\xf1" + raw[at + 1 :]
    with pytest.raises(InvalidEvent, match="UTF-8"):
        decode_event(broken)
