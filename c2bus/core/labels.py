"""Security labels modelled on STANAG 4774: a classification and a releasability list.

Every c2bus event carries a label in two CloudEvents extension attributes:

- ``classification``: one of :class:`Classification` (``"NATO SECRET"``, …);
- ``releasableto``: comma-separated releasability markings, each an ISO 3166-1 alpha-3 nation
  code (``"DEU"``) or ``"NATO"`` (every NATO member nation).

The access check is fail-closed: anything unknown or malformed denies.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# One marking: a nation (ISO 3166-1 alpha-3) or the alliance itself.
_MARKING = r"(?:NATO|[A-Z]{3})"
RELEASABLE_TO_PATTERN = rf"^{_MARKING}(?:,{_MARKING})*$"
_RELEASABLE_TO_RE = re.compile(RELEASABLE_TO_PATTERN)

#: The alliance's member nations (ISO 3166-1 alpha-3), the meaning of the ``NATO`` marking.
NATO_MEMBERS: frozenset[str] = frozenset(
    {
        "ALB", "BEL", "BGR", "CAN", "HRV", "CZE", "DNK", "EST", "FIN", "FRA", "DEU",
        "GRC", "HUN", "ISL", "ITA", "LVA", "LTU", "LUX", "MNE", "NLD", "MKD", "NOR",
        "POL", "PRT", "ROU", "SVK", "SVN", "ESP", "SWE", "TUR", "GBR", "USA",
    }
)  # fmt: skip


class Classification(enum.Enum):
    """NATO classification levels, lowest first; the value is the marking on the wire."""

    NATO_UNCLASSIFIED = "NATO UNCLASSIFIED"
    NATO_RESTRICTED = "NATO RESTRICTED"
    NATO_CONFIDENTIAL = "NATO CONFIDENTIAL"
    NATO_SECRET = "NATO SECRET"
    COSMIC_TOP_SECRET = "COSMIC TOP SECRET"

    #: 0 for NATO UNCLASSIFIED up to 4 for COSMIC TOP SECRET (set below, once): a plain
    #: attribute, since the gateway compares levels once per console and event.
    rank: int

    def dominated_by(self, clearance: Classification) -> bool:
        """True when a holder of ``clearance`` may see material at this level."""
        return self.rank <= clearance.rank


for _rank, _level in enumerate(Classification):
    _level.rank = _rank


def parse_releasability(value: str) -> frozenset[str]:
    """Parse a ``releasableto`` attribute into its set of markings.

    Raises ``ValueError`` naming the problem when the value is malformed.
    """
    if not _RELEASABLE_TO_RE.match(value):
        raise ValueError(
            f"invalid releasability {value!r}: expected comma-separated ISO 3166-1 alpha-3 "
            "nation codes or NATO, e.g. 'NATO' or 'DEU,FRA'"
        )
    return frozenset(value.split(","))


@dataclass(frozen=True, slots=True)
class SecurityLabel:
    """A classification plus the nations (or ``NATO``) the material is releasable to."""

    classification: Classification
    releasable_to: frozenset[str]

    def releasable_to_nation(self, nation: str) -> bool:
        """True when ``nation`` is named, or is a NATO member and ``NATO`` is named."""
        if nation in self.releasable_to:
            return True
        return "NATO" in self.releasable_to and nation in NATO_MEMBERS

    def allows(self, clearance: Classification, nation: str) -> bool:
        """The access check for one reader: cleared high enough and released to their nation."""
        return self.classification.dominated_by(clearance) and self.releasable_to_nation(nation)
