"""The narrow interface between the enforcer and whatever decides: a pure function from a
directive and a time to a :class:`Decision`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from c2bus.core.events import DirectiveEvent, Reason, Verdict
from c2bus.core.labels import Classification, SecurityLabel


@dataclass(frozen=True, slots=True)
class Approval:
    """An approval's author, as verified at the edge (subject, nation, roles, clearance).

    An approval without a clearance (one stamped before edges stamped it) never counts."""

    approver: str
    nation: str
    roles: frozenset[str]
    clearance: Classification | None = None

    def cleared_for(self, label: SecurityLabel) -> bool:
        """May the approver see what they approve: cleared for its label, of a nation it is
        releasable to?"""
        return self.clearance is not None and label.allows(self.clearance, self.nation)


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict with every reason, and the exact policy that produced it."""

    verdict: Verdict
    reasons: tuple[Reason, ...]
    policy_set_id: str
    policy_version: int
    policy_hash: str


class DirectivePolicy:
    """What the enforcer calls: pure, deterministic, time is an input."""

    def decide(
        self,
        directive: DirectiveEvent,
        now: datetime,
        approvals: frozenset[Approval] = frozenset(),
        replay: bool = False,
    ) -> Decision:
        raise NotImplementedError
