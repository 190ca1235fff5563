"""Shadow runs report exactly the directives whose verdict a candidate would change."""

from __future__ import annotations

import msgspec

from c2bus.core.policy.compiler import compile_policy
from c2bus.core.policy.evaluator import PolicyEvaluator
from c2bus.services.policy_api.shadow import shadow
from tests.unit.test_policy import EVALUATOR, POLICY, directive


def test_only_changed_verdicts_are_reported() -> None:
    transfers = [t for t in POLICY.document.transfers if t.id != "toa-pol-12"]
    candidate = PolicyEvaluator(
        compile_policy(msgspec.structs.replace(POLICY.document, version=2, transfers=transfers))
    )
    directives = [
        directive("MNC-NE", "POL-12BDE"),
        directive("MNC-NE", "DEU-PZBRIG-41"),
        directive("JFC-NAPLES", "POL-12BDE"),
    ]
    report = shadow(directives, EVALUATOR, candidate)
    assert report.directives == 3
    assert (report.current_version, report.candidate_version) == (1, 2)
    [change] = report.changed
    assert (change.target, change.current, change.candidate) == ("POL-12BDE", "ALLOW", "DENY")
    assert change.candidate_rules == ("authority.none",)
    assert change.directive_id == directives[0].id
    # Decided at the time each was issued: today they have long expired, and an expired
    # directive would be denied by both versions (no change to report).
    assert change.current_rules == ()
    assert shadow(directives, EVALUATOR, EVALUATOR).changed == ()
