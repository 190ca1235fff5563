"""Evaluate one directive against a compiled policy: pure, deterministic, time is an input.

Every rule family is checked and every violation reported, so an operator sees all that is
wrong at once. Any DENY reason makes the verdict DENY; otherwise any pending approval makes
it HOLD; otherwise ALLOW.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from c2bus.core.decision import Approval, Decision, DirectivePolicy
from c2bus.core.events import DirectiveEvent, Reason, Verdict
from c2bus.core.policy.compiler import CompiledPolicy


@dataclass(frozen=True, slots=True)
class DirectiveContext:
    """Everything an evaluation depends on besides the directive and the policy."""

    now: datetime
    approvals: frozenset[Approval] = frozenset()
    replay: bool = False


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class PolicyEvaluator(DirectivePolicy):
    """The compiled policy behind the enforcer's narrow ``decide`` interface."""

    def __init__(self, policy: CompiledPolicy) -> None:
        self.policy = policy

    def decide(
        self,
        directive: DirectiveEvent,
        now: datetime,
        approvals: frozenset[Approval] = frozenset(),
        replay: bool = False,
    ) -> Decision:
        return self.evaluate(directive, DirectiveContext(now, approvals, replay))

    def evaluate(self, directive: DirectiveEvent, ctx: DirectiveContext) -> Decision:
        deny: list[Reason] = []
        hold: list[Reason] = []
        p = self.policy
        data = directive.data
        now = ctx.now
        skew = timedelta(seconds=p.document.clock_skew_s)

        # Validity.
        if data.expires <= now:
            deny.append(
                Reason("validity.expired", f"the directive expired at {_iso(data.expires)}")
            )
        if data.valid_from is not None and data.valid_from > now + skew:
            deny.append(
                Reason(
                    "validity.not-yet-valid",
                    f"the directive is valid only from {_iso(data.valid_from)}",
                )
            )
        if directive.time > now + skew:
            deny.append(
                Reason("validity.future-dated", f"issued at {_iso(directive.time)}, in the future")
            )
        if ctx.replay:
            deny.append(Reason("validity.replay", f"directive {directive.id} was already decided"))

        issuer = p.units.get(data.issuer)
        target = p.units.get(data.target)
        if issuer is None:
            deny.append(
                Reason(
                    "authority.unknown-issuer", f"{data.issuer} is not in policy {p.policy_set_id}"
                )
            )
        if target is None:
            deny.append(
                Reason(
                    "authority.unknown-target", f"{data.target} is not in policy {p.policy_set_id}"
                )
            )
        kind = p.kinds.get(data.kind)
        if kind is None:
            deny.append(
                Reason("kind.unknown", f"directive kind {data.kind} is not defined by the policy")
            )

        if issuer is not None and target is not None:
            held = {
                g.relationship
                for g in p.grants.get(target.id, ())
                if g.holder == issuer.id and g.window.contains(now)
            }
            if not held:
                deny.append(
                    Reason(
                        "authority.none",
                        f"{issuer.id} holds no command relationship over {target.id} "
                        f"at {_iso(now)}",
                    )
                )
            elif kind is not None and not held & p.relationships_for[data.kind]:
                have = ", ".join(sorted(r.value for r in held))
                need = ", ".join(r.value for r in kind.permitted_by)
                deny.append(
                    Reason(
                        "authority.insufficient",
                        f"{issuer.id} holds {have} over {target.id}; {data.kind} needs {need}",
                    )
                )
            if not directive.label.releasable_to_nation(target.nation):
                deny.append(
                    Reason(
                        "releasability",
                        f"the directive is releasable to {directive.releasableto}, not to "
                        f"{target.id}'s nation {target.nation}",
                    )
                )

        if kind is not None and kind.requires_area and not data.area:
            deny.append(Reason("kind.area-required", f"a {data.kind} directive must give its area"))

        if target is not None and issuer is not None and issuer.nation != target.nation:
            self._caveats(
                directive, ctx=ctx, target=target.id, nation=target.nation, deny=deny, hold=hold
            )

        if kind is not None and kind.roe_action and target is not None:
            self._roe(directive, now, kind.roe_action, target.nation, deny)

        if kind is not None and kind.approvals:
            approvers = self._approvers(directive, ctx.approvals)
            if len(approvers) < kind.approvals:
                hold.append(
                    Reason(
                        "approval.two-person",
                        f"{data.kind} needs {kind.approvals} distinct approvers other than "
                        f"its issuer, each cleared for its label; {len(approvers)} so far",
                    )
                )

        verdict = Verdict.DENY if deny else Verdict.HOLD if hold else Verdict.ALLOW
        return Decision(verdict, (*deny, *hold), p.policy_set_id, p.version, p.content_hash)

    def _approvers(self, directive: DirectiveEvent, approvals: frozenset[Approval]) -> set[str]:
        """The distinct subjects whose approvals count toward the two-person rule: approvers
        by role, not the issuer, cleared for the directive's label and of a nation it is
        releasable to, and (unless the policy allows it) not red-card holders."""
        roles = self.policy.document.roles
        label = directive.label
        return {
            a.approver
            for a in approvals
            if roles.approver in a.roles
            and a.approver != directive.subject
            and a.cleared_for(label)
            and (roles.red_card_may_approve or roles.red_card not in a.roles)
        }

    def _caveats(
        self,
        directive: DirectiveEvent,
        *,
        ctx: DirectiveContext,
        target: str,
        nation: str,
        deny: list[Reason],
        hold: list[Reason],
    ) -> None:
        data = directive.data
        roles = self.policy.document.roles
        start = data.valid_from or ctx.now
        for compiled in self.policy.caveats.get(nation, ()):
            caveat = compiled.caveat
            if compiled.units is not None and target not in compiled.units:
                continue
            if data.kind in compiled.forbidden:
                deny.append(
                    Reason(
                        "caveat.forbidden-kind",
                        f"{nation} caveat {caveat.id} forbids {data.kind} for {target}",
                    )
                )
            if compiled.area is not None and data.area and not compiled.area.covers(data.area):
                deny.append(
                    Reason(
                        "caveat.area",
                        f"{nation} caveat {caveat.id} limits {target} to its agreed area; "
                        "the directive's area lies outside it",
                    )
                )
            window = caveat.window
            if window is not None and not (
                window.contains(start)
                and (window.valid_until is None or data.expires <= window.valid_until)
            ):
                deny.append(
                    Reason(
                        "caveat.time",
                        f"{nation} caveat {caveat.id} allows directives to {target} only "
                        f"within its time window",
                    )
                )
            if data.kind in compiled.red_card:
                label = directive.label
                approved = any(
                    a.nation == nation
                    and roles.red_card in a.roles
                    and a.approver != directive.subject
                    and a.cleared_for(label)
                    for a in ctx.approvals
                )
                if not approved:
                    hold.append(
                        Reason(
                            "approval.red-card",
                            f"{data.kind} to {target} needs {nation}'s red-card approval "
                            f"(caveat {caveat.id})",
                        )
                    )

    def _roe(
        self, directive: DirectiveEvent, now: datetime, action: str, nation: str, deny: list[Reason]
    ) -> None:
        area = directive.data.area
        for compiled in self.policy.roe.get(action, ()):
            if not compiled.rule.window.contains(now):
                continue
            if compiled.nations and nation not in compiled.nations:
                continue
            if area and compiled.area.covers(area):
                return
        deny.append(
            Reason(
                "roe.not-authorised",
                f"no rule of engagement authorises {action} in the directive's area at {_iso(now)}",
            )
        )
