"""Shadow runs: re-decide recorded directives under a candidate policy, report changes.

Pure: the caller supplies the directives (from Kafka) and both policies. Each directive is
judged at its own issue time, so a shadow run answers "what would the candidate have said
when these directives came in", not "what would it say now".
"""

from __future__ import annotations

from dataclasses import dataclass

from c2bus.core.events import DirectiveEvent
from c2bus.core.policy.evaluator import PolicyEvaluator


@dataclass(frozen=True, slots=True)
class Change:
    directive_id: str
    kind: str
    issuer: str
    target: str
    current: str
    candidate: str
    current_rules: tuple[str, ...]
    candidate_rules: tuple[str, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ShadowReport:
    directives: int
    changed: tuple[Change, ...]
    current_version: int
    candidate_version: int


def shadow(
    directives: list[DirectiveEvent], current: PolicyEvaluator, candidate: PolicyEvaluator
) -> ShadowReport:
    changes = []
    for directive in directives:
        before = current.decide(directive, directive.time)
        after = candidate.decide(directive, directive.time)
        if before.verdict is not after.verdict:
            changes.append(
                Change(
                    directive_id=directive.id,
                    kind=directive.data.kind,
                    issuer=directive.data.issuer,
                    target=directive.data.target,
                    current=before.verdict.value,
                    candidate=after.verdict.value,
                    current_rules=tuple(r.rule for r in before.reasons),
                    candidate_rules=tuple(r.rule for r in after.reasons),
                    reasons=tuple(r.message for r in after.reasons),
                )
            )
    return ShadowReport(
        directives=len(directives),
        changed=tuple(changes),
        current_version=current.policy.version,
        candidate_version=candidate.policy.version,
    )
