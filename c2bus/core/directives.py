"""What the enforcer writes for a decided directive: the decision event, the DECIDED step
of its lifecycle and, if allowed, the approved directive; and the approval an edge writes
for an approver it authenticated. Pure: ids are derived from the directive id, so
reprocessing the same directive yields the same events (downstream can drop duplicates by
id)."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from c2bus.core.cloudevents import new_event
from c2bus.core.decision import Decision
from c2bus.core.events import (
    ApprovalData,
    ApprovalEvent,
    ChainLink,
    DecisionData,
    DecisionEvent,
    DirectiveEvent,
    DirectiveState,
    DirectiveStatusData,
    DirectiveStatusEvent,
    Verdict,
)
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification

#: The roles whose holders may approve a held directive (whether an approval counts is the
#: policy's to say: a red-card holder's, for one, only where the policy lets it).
APPROVER_ROLES = ("approver", "red-card-holder")


def decision_id(
    directive: DirectiveEvent,
    verdict: Verdict = Verdict.ALLOW,
    approvals: int = 0,
    replay_of: str | None = None,
    *,
    kind: str = "decision",
) -> str:
    """``decision:<id>`` for the final verdict; ``decision:<id>:hold:<n>`` for the HOLD
    recorded with n approvals; ``decision:<id>:replay:<position>`` for a replay denied at
    that input position. Every decision event has its own id; ``kind`` names events that
    accompany one (``decided:…`` for its status step)."""
    if replay_of is not None:
        return f"{kind}:{directive.id}:replay:{replay_of}"
    if verdict is Verdict.HOLD:
        return f"{kind}:{directive.id}:hold:{approvals}"
    return f"{kind}:{directive.id}"


def decision_event(
    directive: DirectiveEvent,
    decision: Decision,
    now: datetime,
    source: str,
    approvals: int = 0,
    *,
    replay_of: str | None = None,
    chain: ChainLink | None = None,
) -> DecisionEvent:
    """The audit record of a verdict, at ``chain`` in the audit chain; it carries the
    directive's own security label."""
    data = directive.data
    return new_event(
        DecisionEvent,
        id=decision_id(directive, decision.verdict, approvals, replay_of),
        source=source,
        time=now,
        like=directive,
        subject=directive.id,
        data=DecisionData(
            directive_id=directive.id,
            verdict=decision.verdict,
            issuer=data.issuer,
            target=data.target,
            kind=data.kind,
            policy_set_id=decision.policy_set_id,
            policy_version=decision.policy_version,
            policy_hash=decision.policy_hash,
            reasons=list(decision.reasons),
            chain=chain,
        ),
    )


def approved_directive(directive: DirectiveEvent, now: datetime) -> DirectiveEvent:
    """The directive as released downstream, naming the decision that allowed it and when."""
    return msgspec.structs.replace(directive, decisionid=decision_id(directive), decidedat=now)


def stale_release(
    directive: DirectiveEvent, now: datetime, horizon: timedelta, skew: timedelta
) -> str | None:
    """Why an approved directive (its signature verified) is not to be delivered at ``now``:
    not a release, expired, or decided longer ago than ``horizon`` less ``skew`` (a reader
    that remembers releases over ``horizon`` can tell a copy of one from the release
    itself, and one older than that it cannot); None when it may be."""
    decided = directive.decidedat
    if directive.decisionid is None or decided is None:
        return "not a release: an approved directive names its decision and when it was made"
    if directive.data.expires <= now:
        return f"stale: expired at {directive.data.expires.isoformat()}"
    if decided < now - horizon + skew:
        return (
            f"stale: decided at {decided.isoformat()}, before the replay horizon "
            f"({int(horizon.total_seconds())} s)"
        )
    if decided > now + skew:
        return f"decided at {decided.isoformat()}, ahead of this clock"
    return None


def lifecycle_step(
    directive: DirectiveEvent,
    state: DirectiveState,
    *,
    event_id: str,
    actor: str,
    source: str,
    now: datetime,
    reason: str | None = None,
) -> DirectiveStatusEvent:
    """One step of a directive's lifecycle, labelled like the directive and naming its
    issuer and target (so gateways can route it without remembering the directive)."""
    return new_event(
        DirectiveStatusEvent,
        id=event_id,
        source=source,
        time=now,
        like=directive,
        subject=directive.id,
        data=DirectiveStatusData(
            directive_id=directive.id,
            state=state,
            actor=actor,
            issuer=directive.data.issuer,
            target=directive.data.target,
            reason=reason,
        ),
    )


def decided_status(
    directive: DirectiveEvent,
    decision: Decision,
    now: datetime,
    actor: str,
    approvals: int = 0,
    *,
    replay_of: str | None = None,
) -> DirectiveStatusEvent:
    """The DECIDED step of the directive's lifecycle, with an id like its decision's
    (``decided:<id>``, ``decided:<id>:hold:<n>``…); ``reason`` carries the verdict and the
    rules behind it, so the issuer sees why without reading the audit trail."""
    rules = ", ".join(r.rule for r in decision.reasons)
    reason = decision.verdict.value + (f": {rules}" if rules else "")
    return lifecycle_step(
        directive,
        DirectiveState.DECIDED,
        event_id=decision_id(directive, decision.verdict, approvals, replay_of, kind="decided"),
        actor=actor,
        source=f"urn:c2bus:{actor}",
        now=now,
        reason=reason[:4096],
    )


def approval_event(
    approver: Identity,
    directive_id: str,
    target: str,
    *,
    classification: Classification,
    releasableto: str,
    comment: str,
    source: str,
    now: datetime,
) -> ApprovalEvent:
    """``approver``'s approval of held directive ``directive_id`` (of unit ``target``: the
    approval is keyed like the directive, so it lands in its partition), naming the
    approver's verified identity. One per approver and directive: a second is a copy."""
    return new_event(
        ApprovalEvent,
        id=f"approval:{directive_id}:{approver.subject}",
        source=source,
        time=now,
        classification=classification,
        releasableto=releasableto,
        subject=directive_id,
        data=ApprovalData(
            directive_id=directive_id,
            target=target,
            approver=approver.subject,
            nation=approver.nation,
            roles=sorted(approver.roles),
            comment=comment,
            clearance=approver.clearance,
        ),
    )
