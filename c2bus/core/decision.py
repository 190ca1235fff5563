"""The narrow interface between the enforcer and whatever decides: a pure function from a
directive and a time to a :class:`Decision`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from c2bus.core.events import DirectiveEvent, Reason, Verdict


@dataclass(frozen=True, slots=True)
class Approval:
    """An approval's author, as verified at the edge (subject, nation, roles)."""

    approver: str
    nation: str
    roles: frozenset[str]


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
