"""What the policy API does in its worker process (``adapters.worker``): everything whose cost a
caller's document decides — parsing and validating, compiling, deciding a dry run, a shadow
run — so that no request holds the event loop, and one that overruns its time limit is
stopped. Each function takes and returns plain, picklable values; a document that does not
validate comes back as its issues (the exception would not survive the trip)."""

from __future__ import annotations

from datetime import datetime

from c2bus.core.decision import Approval, Decision
from c2bus.core.events import DirectiveEvent
from c2bus.core.policy.compiler import (
    PolicyInvalid,
    PolicyIssue,
    compile_policy,
    load_policy_document,
)
from c2bus.core.policy.evaluator import DirectiveContext, PolicyEvaluator
from c2bus.core.policy.model import PolicyDocument
from c2bus.services.policy_api.shadow import ShadowReport, shadow


def checked(raw: bytes) -> PolicyDocument | list[PolicyIssue]:
    """The document in ``raw`` (YAML or JSON) if it loads and compiles, else every issue."""
    try:
        doc = load_policy_document(raw)
        compile_policy(doc)
    except PolicyInvalid as exc:
        return exc.issues
    return doc


def dry_run(
    doc: PolicyDocument, directive: DirectiveEvent, at: datetime, approvals: frozenset[Approval]
) -> Decision | list[PolicyIssue]:
    """``directive`` decided under ``doc`` at ``at`` with ``approvals``; the document's
    issues instead if it does not compile."""
    try:
        evaluator = PolicyEvaluator(compile_policy(doc))
    except PolicyInvalid as exc:
        return exc.issues
    return evaluator.evaluate(directive, DirectiveContext(at, approvals))


def shadow_run(
    directives: list[DirectiveEvent], current: PolicyDocument, candidate: PolicyDocument
) -> ShadowReport:
    """``directives`` re-decided under ``candidate`` against ``current``."""
    return shadow(
        directives,
        PolicyEvaluator(compile_policy(current)),
        PolicyEvaluator(compile_policy(candidate)),
    )
