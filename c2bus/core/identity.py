"""Who is at the other end of a console: the claims of a verified token, and what they see."""

from __future__ import annotations

from dataclasses import dataclass

from c2bus.core.labels import Classification, SecurityLabel


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified principal: a console operator or a publishing service."""

    subject: str
    nation: str
    clearance: Classification
    unit: str
    roles: frozenset[str]
    #: Units besides its own that this identity may issue directives for (a C2 system that
    #: relays several headquarters' orders); usually none.
    acts_for: frozenset[str] = frozenset()

    def may_see(self, label: SecurityLabel) -> bool:
        """Classification within clearance and released to this identity's nation."""
        return label.allows(self.clearance, self.nation)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def may_issue_for(self, unit: str) -> bool:
        """May this identity issue a directive whose issuer is ``unit``?"""
        return unit == self.unit or unit in self.acts_for
