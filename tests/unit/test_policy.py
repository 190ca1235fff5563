"""The alignment-policy engine against the reference policy: one scenario per rule family
with an ALLOW and a DENY or HOLD case, validation that lists every located problem, and the
invariants that must never break (property tests)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from c2bus.core.codec import decode_event
from c2bus.core.decision import Approval
from c2bus.core.events import DirectiveEvent, Verdict
from c2bus.core.labels import Classification
from c2bus.core.policy.compiler import (
    CompiledPolicy,
    PolicyInvalid,
    compile_policy,
    content_hash,
    load_policy,
)
from c2bus.core.policy.evaluator import DirectiveContext, PolicyEvaluator
from c2bus.core.policy.model import Caveat, PolicyDocument
from tests.conftest import ROOT, SCHEMAS

POLICY_FILE = ROOT / "deploy" / "policies" / "alliance.yaml"
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
RAW = POLICY_FILE.read_bytes()
POLICY = load_policy(RAW)
EVALUATOR = PolicyEvaluator(POLICY)

BALTIC = [{"lat": 55.0, "lon": 15.0}, {"lat": 55.0, "lon": 16.0}, {"lat": 55.5, "lon": 15.5}]
NORTH_SEA = [{"lat": 55.0, "lon": 3.0}, {"lat": 55.0, "lon": 4.0}, {"lat": 55.5, "lon": 3.5}]
LAND = [{"lat": 54.0, "lon": 22.5}, {"lat": 54.0, "lon": 23.0}, {"lat": 54.4, "lon": 22.7}]


def directive(
    issuer: str,
    target: str,
    kind: str = "MOVE",
    area: list[dict[str, float]] | None = BALTIC,
    releasable: str = "NATO",
    expires: datetime = NOW + timedelta(hours=6),
    **extra: Any,
) -> DirectiveEvent:
    doc = json.loads((SCHEMAS / "examples" / "valid" / "directive.json").read_text())
    doc["time"] = NOW.isoformat()
    doc["releasableto"] = releasable
    data = doc["data"]
    data.pop("valid_from", None)
    data.update(issuer=issuer, target=target, kind=kind, expires=expires.isoformat(), **extra)
    if area is None:
        data.pop("area", None)
    else:
        data["area"] = area
    event = decode_event(json.dumps(doc))
    assert isinstance(event, DirectiveEvent)
    return event


def decide(event: DirectiveEvent, approvals: tuple[Approval, ...] = (), now: datetime = NOW) -> Any:
    return EVALUATOR.evaluate(event, DirectiveContext(now, frozenset(approvals)))


def rules(decision: Any) -> list[str]:
    return [r.rule for r in decision.reasons]


SECRET = Classification.NATO_SECRET
APPROVER_A = Approval("alice", "GBR", frozenset({"approver"}), SECRET)
APPROVER_B = Approval("bob", "USA", frozenset({"approver"}), SECRET)
DEU_RED_CARD = Approval("dieter", "DEU", frozenset({"red-card-holder"}), SECRET)


# --- scenarios, one rule family at a time -----------------------------------------------


def test_authority_by_transfer_and_by_national_chain() -> None:
    assert decide(directive("MNC-NE", "POL-12BDE")).verdict is Verdict.ALLOW  # OPCON by TOA
    assert decide(directive("JFC-BRUNSSUM", "DEU-PZGRENBTL-411")).verdict is Verdict.ALLOW
    assert decide(directive("POL-DGRSZ", "POL-12BDE")).verdict is Verdict.ALLOW  # national
    denied = decide(directive("JFC-NAPLES", "POL-12BDE"))
    assert denied.verdict is Verdict.DENY
    assert rules(denied) == ["authority.none"]
    assert "JFC-NAPLES holds no command relationship over POL-12BDE" in denied.reasons[0].message


def test_a_lapsed_transfer_gives_no_authority() -> None:
    decision = decide(directive("JFC-NAPLES", "ESP-BRILAT"))
    assert rules(decision) == ["authority.none"]
    earlier = decide(directive("JFC-NAPLES", "ESP-BRILAT"), now=datetime(2025, 6, 1, tzinfo=UTC))
    assert rules(earlier) == ["validity.future-dated"]  # issued "later" than that now
    assert "authority.none" not in rules(earlier)


def test_relationship_must_permit_the_kind() -> None:
    assert decide(directive("MNC-NE", "LTU-IRON-WOLF")).verdict is Verdict.ALLOW  # TACON: MOVE
    decision = decide(directive("MNC-NE", "LTU-IRON-WOLF", kind="RESUPPLY", area=None))
    assert rules(decision) == ["authority.insufficient"]
    assert "holds TACON over LTU-IRON-WOLF; RESUPPLY needs COMMAND, OPCON, ADCON" in (
        decision.reasons[0].message
    )


def test_caveat_forbidden_kind() -> None:
    own_nation = decide(directive("LTU-LF", "LTU-IRON-WOLF", kind="REORGANISE", area=None))
    assert own_nation.verdict is Verdict.ALLOW  # national caveats bind the alliance, not the nation
    decision = decide(directive("MNC-NE", "LTU-IRON-WOLF", kind="REORGANISE", area=None))
    assert "caveat.forbidden-kind" in rules(decision)
    assert decision.verdict is Verdict.DENY


def test_caveat_geographic_limit() -> None:
    assert decide(directive("MNC-NE", "DEU-PZBRIG-41", area=BALTIC)).verdict is Verdict.ALLOW
    decision = decide(directive("MNC-NE", "DEU-PZBRIG-41", area=NORTH_SEA))
    assert rules(decision) == ["caveat.area"]
    assert decide(directive("MNC-NE", "POL-12BDE", area=NORTH_SEA)).verdict is Verdict.ALLOW


def test_caveat_time_limit() -> None:
    inside = directive("JFC-NAPLES", "ITA-ARIETE", expires=datetime(2026, 12, 30, tzinfo=UTC))
    assert decide(inside).verdict is Verdict.ALLOW
    beyond = directive("JFC-NAPLES", "ITA-ARIETE", expires=datetime(2027, 1, 15, tzinfo=UTC))
    assert rules(decide(beyond)) == ["caveat.time"]


def test_rules_of_engagement_and_two_person_rule() -> None:
    at_sea = directive("MNC-NE", "POL-12BDE", kind="ENGAGE", area=BALTIC)
    held = decide(at_sea)
    assert held.verdict is Verdict.HOLD
    assert rules(held) == ["approval.two-person"]
    assert decide(at_sea, (APPROVER_A,)).verdict is Verdict.HOLD
    assert decide(at_sea, (APPROVER_A, APPROVER_A)).verdict is Verdict.HOLD  # distinct people
    assert decide(at_sea, (APPROVER_A, APPROVER_B)).verdict is Verdict.ALLOW
    on_land = decide(
        directive("MNC-NE", "POL-12BDE", kind="ENGAGE", area=LAND), (APPROVER_A, APPROVER_B)
    )
    assert rules(on_land) == ["roe.not-authorised"]
    tacon = decide(directive("MNC-NE", "LTU-IRON-WOLF", kind="ENGAGE", area=BALTIC))
    assert "authority.insufficient" in rules(tacon)


def test_red_card_holds_until_the_nation_approves() -> None:
    event = directive("MNC-NE", "DEU-PZBRIG-41", kind="ENGAGE", area=BALTIC)
    held = decide(event, (APPROVER_A, APPROVER_B))
    assert held.verdict is Verdict.HOLD
    assert rules(held) == ["approval.red-card"]
    other_nation = Approval("pierre", "FRA", frozenset({"red-card-holder"}), SECRET)
    assert decide(event, (APPROVER_A, APPROVER_B, other_nation)).verdict is Verdict.HOLD
    assert decide(event, (APPROVER_A, APPROVER_B, DEU_RED_CARD)).verdict is Verdict.ALLOW


def test_the_two_person_rule_takes_two_other_people_cleared_for_the_directive() -> None:
    event = msgspec.structs.replace(
        directive("MNC-NE", "POL-12BDE", kind="ENGAGE", area=BALTIC), subject="erik"
    )
    assert decide(event, (APPROVER_A, APPROVER_B)).verdict is Verdict.ALLOW
    own = Approval("erik", "GBR", frozenset({"approver"}), SECRET)
    held = decide(event, (own, APPROVER_A))  # the issuer approving his own directive
    assert held.verdict is Verdict.HOLD and rules(held) == ["approval.two-person"]
    assert "1 so far" in held.reasons[0].message
    for uncleared in (
        Approval("carol", "GBR", frozenset({"approver"}), Classification.NATO_CONFIDENTIAL),
        Approval("carol", "GBR", frozenset({"approver"})),  # no clearance stamped: none
    ):
        assert decide(event, (uncleared, APPROVER_A)).verdict is Verdict.HOLD
    not_released = msgspec.structs.replace(event, releasableto="POL,GBR,DEU")
    assert decide(not_released, (APPROVER_A, APPROVER_B)).verdict is Verdict.HOLD  # bob: USA
    fra = Approval("pierre", "FRA", frozenset({"approver"}), Classification.COSMIC_TOP_SECRET)
    assert decide(not_released, (APPROVER_A, fra)).verdict is Verdict.HOLD  # FRA: not released
    pol = Approval("piotr", "POL", frozenset({"approver"}), SECRET)
    assert decide(not_released, (APPROVER_A, pol)).verdict is Verdict.ALLOW


def test_a_red_card_holder_is_not_also_one_of_the_two_approvers_unless_the_policy_says() -> None:
    event = directive("MNC-NE", "DEU-PZBRIG-41", kind="ENGAGE", area=BALTIC)
    both = Approval("dieter", "DEU", frozenset({"approver", "red-card-holder"}), SECRET)
    held = decide(event, (APPROVER_A, both))
    assert held.verdict is Verdict.HOLD and rules(held) == ["approval.two-person"]
    assert decide(event, (APPROVER_A, APPROVER_B, both)).verdict is Verdict.ALLOW
    uncleared = Approval(
        "dora", "DEU", frozenset({"red-card-holder"}), Classification.NATO_RESTRICTED
    )
    assert rules(decide(event, (APPROVER_A, APPROVER_B, uncleared))) == ["approval.red-card"]

    doc = yaml.safe_load(RAW)
    doc["roles"] = {**doc.get("roles", {}), "red_card_may_approve": True}
    lenient = PolicyEvaluator(compile_policy(msgspec.convert(doc, PolicyDocument)))
    allowed = lenient.evaluate(event, DirectiveContext(NOW, frozenset({APPROVER_A, both})))
    assert allowed.verdict is Verdict.ALLOW


def test_releasability_to_the_target_nation() -> None:
    assert decide(directive("MNC-NE", "POL-12BDE", releasable="POL,DEU")).verdict is Verdict.ALLOW
    decision = decide(directive("MNC-NE", "POL-12BDE", releasable="DEU,LTU"))
    assert rules(decision) == ["releasability"]


def test_validity() -> None:
    expired = decide(directive("MNC-NE", "POL-12BDE", expires=NOW - timedelta(seconds=1)))
    assert rules(expired) == ["validity.expired"]
    later = directive("MNC-NE", "POL-12BDE", valid_from=(NOW + timedelta(hours=1)).isoformat())
    assert rules(decide(later)) == ["validity.not-yet-valid"]
    within_skew = directive(
        "MNC-NE", "POL-12BDE", valid_from=(NOW + timedelta(seconds=20)).isoformat()
    )
    assert decide(within_skew).verdict is Verdict.ALLOW
    replay = EVALUATOR.evaluate(
        directive("MNC-NE", "POL-12BDE"), DirectiveContext(NOW, replay=True)
    )
    assert rules(replay) == ["validity.replay"]


def test_unknown_units_and_kinds_are_denied_with_that_reason() -> None:
    decision = decide(directive("GHOST-HQ", "NOBODY", kind="TELEPORT"))
    assert rules(decision) == [
        "authority.unknown-issuer",
        "authority.unknown-target",
        "kind.unknown",
    ]
    assert (
        decide(directive("MNC-NE", "POL-12BDE", area=None)).verdict is Verdict.DENY
    )  # area required


def test_every_violation_is_reported_at_once() -> None:
    decision = decide(
        directive("JFC-NAPLES", "DEU-PZBRIG-41", kind="ENGAGE", area=NORTH_SEA, releasable="ITA",
                  expires=NOW - timedelta(minutes=1))
    )  # fmt: skip
    assert decision.verdict is Verdict.DENY
    assert set(rules(decision)) >= {
        "validity.expired",
        "authority.none",
        "releasability",
        "caveat.area",
        "roe.not-authorised",
        "approval.red-card",
        "approval.two-person",
    }


def test_decision_names_the_policy_version_and_hash() -> None:
    decision = decide(directive("MNC-NE", "POL-12BDE"))
    assert (decision.policy_set_id, decision.policy_version) == ("alliance-main", 1)
    assert decision.policy_hash == content_hash(POLICY.document)
    # The hash covers the document, not its formatting: the same policy as JSON hashes alike.
    assert load_policy(msgspec.json.encode(POLICY.document)).content_hash == POLICY.content_hash


# --- validation ---------------------------------------------------------------------------


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # repeated values written out: policies take no anchors or aliases


def mutated(change: Any) -> bytes:
    doc = yaml.safe_load(RAW)
    change(doc)
    return yaml.dump(doc, Dumper=_NoAliases).encode()


def test_every_problem_is_listed_and_located() -> None:
    def break_it(doc: dict[str, Any]) -> None:
        doc["units"][5]["parent"] = "NO-SUCH-HQ"  # DEU-PZBRIG-41
        doc["units"].append(
            {"id": "LOOP-A", "parent": "LOOP-B", "nation": "DEU", "echelon": "TACTICAL"}
        )
        doc["units"].append(
            {"id": "LOOP-B", "parent": "LOOP-A", "nation": "DEU", "echelon": "TACTICAL"}
        )
        doc["transfers"][0]["window"]["valid_until"] = "2025-01-01T00:00:00Z"  # inverted
        doc["transfers"].append(
            {"id": "toa-clash", "unit": "POL-12BDE", "to": "JFC-NAPLES", "relationship": "OPCON",
             "window": {"valid_from": "2026-06-01T00:00:00Z"}}
        )  # fmt: skip
        doc["caveats"][2]["forbidden_kinds"] = ["TELEPORT"]
        doc["caveats"][0]["allowed_area"] = [{"lat": 1, "lon": 1}] * 3

    with pytest.raises(PolicyInvalid) as err:
        load_policy(mutated(break_it))
    located = {(i.pointer, i.message.split(":")[0]) for i in err.value.issues}
    pointers = {p for p, _ in located}
    assert "/units/5/parent" in pointers
    assert any("cycle in chain of command" in i.message for i in err.value.issues)
    assert "/transfers/0/window" in pointers
    assert "/transfers/6/window" in pointers  # overlaps toa-pol-12
    assert "/caveats/2/forbidden_kinds/0" in pointers
    assert "/caveats/0/allowed_area" in pointers


@pytest.mark.parametrize(
    ("change", "pointer", "text"),
    [
        (lambda d: d["units"][0].update(colour="blue"), "/units/0", "'colour' was unexpected"),
        (
            lambda d: d["kinds"]["MOVE"].update(permitted_by=["FRIENDSHIP"]),
            "/kinds/MOVE/permitted_by/0",
            "'FRIENDSHIP' is not one of",
        ),
        (
            lambda d: d["caveats"][0].update(allowed_area=d["caveats"][0]["allowed_area"][:2]),
            "/caveats/0/allowed_area",
            "is too short",
        ),
        (
            lambda d: d["rules_of_engagement"][0]["area"][0].update(lat=95),
            "/rules_of_engagement/0/area/0/lat",
            "greater than the maximum of 90",
        ),
    ],
)
def test_structural_errors_are_located(change: Any, pointer: str, text: str) -> None:
    with pytest.raises(PolicyInvalid) as err:
        load_policy(mutated(change))
    [issue] = err.value.issues
    assert issue.pointer == pointer
    assert text in issue.message


def test_a_message_about_a_long_value_quotes_only_its_ends() -> None:
    """A caveat area of 2,000 points (over the schema's maximum) is named in a message of a
    few hundred characters, not one that repeats the whole area back."""
    area = [{"lat": 50 + i / 10_000, "lon": 10 + i / 10_000} for i in range(2_000)]
    with pytest.raises(PolicyInvalid) as err:
        load_policy(mutated(lambda d: d["caveats"][0].update(allowed_area=area)))
    [issue] = err.value.issues
    assert issue.pointer == "/caveats/0/allowed_area"
    assert len(issue.message) <= 240
    assert issue.message.startswith("[{'lat': 50.0") and issue.message.endswith("is too long")


def test_yaml_aliases_are_refused_before_anything_expands() -> None:
    """A few hundred bytes of nested aliases expand to gigabytes: refused at once, with
    the place of the first anchor, however the document is otherwise wrong."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    assert len(bomb) < 1000
    for document in (bomb, bomb + "units: [}\n", RAW.decode() + "extra: &e [1]\nmore: *e\n"):
        with pytest.raises(PolicyInvalid) as err:
            load_policy(document.encode())
        [issue] = err.value.issues
        assert "anchors and aliases are not accepted" in issue.message
        assert "line 1" in issue.message or "line" in issue.message


# --- invariants ---------------------------------------------------------------------------

UNITS = sorted(POLICY.units)
KINDS = sorted(POLICY.kinds)
AREAS = [BALTIC, NORTH_SEA, LAND, None]
moments = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
)


def within_authority(
    policy: CompiledPolicy, issuer: str, target: str, kind: str, now: datetime
) -> bool:
    permitted = policy.relationships_for.get(kind, frozenset())
    return any(
        g.holder == issuer and g.relationship in permitted and g.window.contains(now)
        for g in policy.grants.get(target, ())
    )


@settings(max_examples=300)
@given(
    issuer=st.sampled_from(UNITS),
    target=st.sampled_from(UNITS),
    kind=st.sampled_from(KINDS),
    area=st.sampled_from(AREAS),
    now=moments,
    approvals=st.sets(st.sampled_from([APPROVER_A, APPROVER_B, DEU_RED_CARD]), max_size=3),
)
def test_outside_authority_is_never_allowed_and_evaluation_is_deterministic(
    issuer: str, target: str, kind: str, area: Any, now: datetime, approvals: set[Approval]
) -> None:
    event = directive(issuer, target, kind=kind, area=area, expires=now + timedelta(hours=1))
    event = msgspec.structs.replace(event, time=now)
    ctx = DirectiveContext(now, frozenset(approvals))
    first = EVALUATOR.evaluate(event, ctx)
    assert first == EVALUATOR.evaluate(event, ctx)  # deterministic
    assert (first.policy_set_id, first.policy_version, first.policy_hash) == (
        POLICY.policy_set_id,
        POLICY.version,
        POLICY.content_hash,
    )
    if first.verdict is Verdict.ALLOW:
        assert within_authority(POLICY, issuer, target, kind, now)
        assert first.reasons == ()
    else:
        assert first.reasons  # a refusal always says why


caveats = st.builds(
    Caveat,
    id=st.just("extra"),
    nation=st.sampled_from(["DEU", "POL", "LTU", "NLD", "ITA", "ESP"]),
    forbidden_kinds=st.lists(st.sampled_from(KINDS), max_size=2),
    red_card_kinds=st.lists(st.sampled_from(KINDS), max_size=2),
)


@settings(max_examples=200)
@given(
    caveat=caveats,
    issuer=st.sampled_from(UNITS),
    target=st.sampled_from(UNITS),
    kind=st.sampled_from(KINDS),
    area=st.sampled_from(AREAS),
)
def test_adding_a_caveat_never_turns_a_refusal_into_an_allow(
    caveat: Caveat, issuer: str, target: str, kind: str, area: Any
) -> None:
    stricter_doc = copy.copy(POLICY.document)
    stricter_doc = msgspec.structs.replace(
        POLICY.document, caveats=[*POLICY.document.caveats, caveat]
    )
    stricter = PolicyEvaluator(compile_policy(stricter_doc, "sha256:" + "0" * 64))
    event = directive(issuer, target, kind=kind, area=area)
    before = EVALUATOR.evaluate(event, DirectiveContext(NOW))
    after = stricter.evaluate(event, DirectiveContext(NOW))
    if before.verdict is not Verdict.ALLOW:
        assert after.verdict is not Verdict.ALLOW
    if before.verdict is Verdict.DENY:
        assert after.verdict is Verdict.DENY


def test_reference_policy_round_trips_as_json() -> None:
    doc = msgspec.json.encode(POLICY.document)
    again = load_policy(doc)
    assert again.document == POLICY.document
    assert isinstance(again.document, PolicyDocument)
