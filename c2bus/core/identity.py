"""Who is at the other end of a console: the claims of a verified token, and what they see."""

from __future__ import annotations

import re
from dataclasses import dataclass

from c2bus.core.fields import NAMESPACE_SEPARATOR, SCOPED_IDENTIFIER_PATTERN
from c2bus.core.labels import Classification, SecurityLabel

SCOPED_IDENTIFIER = re.compile(SCOPED_IDENTIFIER_PATTERN)


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified principal: a console operator or a publishing service."""

    subject: str
    nation: str
    clearance: Classification
    unit: str
    roles: frozenset[str]
    #: Units besides its own that this identity acts for: it may issue their directives and
    #: report their SA (a C2 system relaying several headquarters' orders, a blue-force
    #: tracking feed reporting several units); usually none.
    acts_for: frozenset[str] = frozenset()

    def may_see(self, label: SecurityLabel) -> bool:
        """Classification within clearance and released to this identity's nation."""
        return label.allows(self.clearance, self.nation)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def may_act_for(self, unit: str) -> bool:
        """May this identity issue a directive whose issuer is ``unit``, or report SA in
        ``unit``'s namespace (its tracks, its position and status)?"""
        return unit == self.unit or unit in self.acts_for

    def acting(self) -> tuple[str, ...]:
        """The units it acts for, its own first."""
        return (self.unit, *sorted(self.acts_for))

    def in_namespace(self, identifier: str) -> str | None:
        """``identifier`` (e.g. a track id) as this identity may publish it: in its unit's
        namespace (``<unit>~<identifier>``), or as it is when already in the namespace of a
        unit it acts for; None when it names another unit's namespace. ValueError when the
        result is not a scoped identifier (too long, or the unit is no identifier)."""
        namespace, separator, _ = identifier.partition(NAMESPACE_SEPARATOR)
        if separator and not self.may_act_for(namespace):
            return None
        scoped = identifier if separator else self.unit + NAMESPACE_SEPARATOR + identifier
        if not SCOPED_IDENTIFIER.match(scoped):
            raise ValueError(
                "not an identifier in its publisher's namespace (<unit>~<identifier>, "
                "each 1 to 128 letters, digits and . _ : / -)"
            )
        return scoped
