"""The command structure and the chain-of-command policy: pure, deterministic, fail closed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.codec import decode_event
from services.domain.directives import approved_directive, decision_event
from services.domain.events import DirectiveEvent, Verdict
from services.domain.structure import ChainOfCommandPolicy, CommandStructure
from services.errors import PolicyError
from tests.conftest import ROOT, SCHEMAS

STRUCTURE_FILE = ROOT / "deploy" / "policies" / "command-structure.yaml"
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def structure() -> CommandStructure:
    return CommandStructure.load(STRUCTURE_FILE.read_bytes())


def directive(issuer: str, target: str, expires: datetime | None = None) -> DirectiveEvent:
    doc = json.loads((SCHEMAS / "examples" / "valid" / "directive.json").read_text())
    doc["data"]["issuer"] = issuer
    doc["data"]["target"] = target
    doc["data"]["expires"] = (expires or NOW + timedelta(hours=1)).isoformat()
    event = decode_event(json.dumps(doc))
    assert isinstance(event, DirectiveEvent)
    return event


def test_reference_structure_chains(structure: CommandStructure) -> None:
    assert structure.is_superior("SHAPE", "POL-12BDE")
    assert structure.is_superior("MNC-NE", "POL-12BDE")
    assert not structure.is_superior("POL-12BDE", "MNC-NE")
    assert not structure.is_superior("JFC-NAPLES", "POL-12BDE")
    assert not structure.is_superior("POL-12BDE", "POL-12BDE")
    assert structure.content_hash.startswith("sha256:")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"structure_id: x\nversion: 1\nunits: []\n", "invalid command structure"),
        (
            b"structure_id: x\nversion: 1\nunits:\n"
            b"  - {id: A, nation: DEU, echelon: TACTICAL, parent: B}\n",
            "unknown parent B",
        ),
        (
            b"structure_id: x\nversion: 1\nunits:\n"
            b"  - {id: A, nation: DEU, echelon: TACTICAL, parent: B}\n"
            b"  - {id: B, nation: DEU, echelon: TACTICAL, parent: A}\n",
            "cycle",
        ),
        (
            b"structure_id: x\nversion: 1\nunits:\n"
            b"  - {id: A, nation: DEU, echelon: TACTICAL}\n"
            b"  - {id: A, nation: FRA, echelon: TACTICAL}\n",
            "listed twice",
        ),
        (b"{not yaml: [", "invalid command structure"),
    ],
)
def test_invalid_structures_are_refused(document: bytes, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        CommandStructure.load(document)


def test_superior_may_direct_subordinate(structure: CommandStructure) -> None:
    decision = ChainOfCommandPolicy(structure).decide(directive("MNC-NE", "POL-12BDE"), NOW)
    assert decision.verdict is Verdict.ALLOW
    assert decision.reasons == ()
    assert decision.policy_hash == structure.content_hash


def test_every_violation_is_listed(structure: CommandStructure) -> None:
    policy = ChainOfCommandPolicy(structure)
    late = policy.decide(directive("JFC-NAPLES", "POL-12BDE", NOW - timedelta(seconds=1)), NOW)
    assert late.verdict is Verdict.DENY
    assert [r.rule for r in late.reasons] == ["expired", "chain-of-command"]
    unknown = policy.decide(directive("GHOST", "NOBODY"), NOW)
    assert [r.rule for r in unknown.reasons] == ["unknown-issuer", "unknown-target"]


def test_expiry_is_judged_against_the_given_time(structure: CommandStructure) -> None:
    policy = ChainOfCommandPolicy(structure)
    event = directive("MNC-NE", "POL-12BDE", NOW)
    assert policy.decide(event, NOW - timedelta(seconds=1)).verdict is Verdict.ALLOW
    assert policy.decide(event, NOW).verdict is Verdict.DENY


def test_decision_and_approval_events(structure: CommandStructure) -> None:
    event = directive("MNC-NE", "POL-12BDE")
    decision = ChainOfCommandPolicy(structure).decide(event, NOW)
    record = decision_event(event, decision, NOW, "urn:test")
    assert record.id == f"decision:{event.id}"
    assert record.data.directive_id == event.id
    assert (record.classification, record.releasableto) == (
        event.classification,
        event.releasableto,
    )
    approved = approved_directive(event)
    assert approved.decisionid == record.id
    assert approved.data == event.data


UNITS = sorted(CommandStructure.load(STRUCTURE_FILE.read_bytes()).units)


@given(st.sampled_from(UNITS), st.sampled_from(UNITS), st.booleans())
def test_policy_is_deterministic_and_allows_exactly_the_chain(
    issuer: str, target: str, expired: bool
) -> None:
    structure = CommandStructure.load(STRUCTURE_FILE.read_bytes())
    policy = ChainOfCommandPolicy(structure)
    expires = NOW - timedelta(minutes=1) if expired else NOW + timedelta(minutes=1)
    event = directive(issuer, target, expires)
    first = policy.decide(event, NOW)
    assert first == policy.decide(event, NOW)
    allowed = structure.is_superior(issuer, target) and not expired
    assert (first.verdict is Verdict.ALLOW) == allowed
    assert bool(first.reasons) == (not allowed)


def test_structure_file_path_is_in_the_repository() -> None:
    assert Path(STRUCTURE_FILE).is_file()
