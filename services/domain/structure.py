"""The command structure: units, their parents, nations and echelons, read from a document.

This first cut knows one relationship, the chain of command: a unit may direct the units
below it. The alignment-policy engine replaces it with transfers of authority, caveats and
rules of engagement; the :class:`DirectivePolicy` interface stays.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from ..errors import PolicyError
from .events import DirectiveEvent, Reason, Verdict
from .fields import Identifier

NationOrNato = Annotated[str, Meta(pattern=r"^(?:NATO|[A-Z]{3})$")]


class Echelon(enum.Enum):
    STRATEGIC = "STRATEGIC"
    OPERATIONAL = "OPERATIONAL"
    TACTICAL = "TACTICAL"


class UnitSpec(Struct, frozen=True, forbid_unknown_fields=True):
    id: Identifier
    nation: NationOrNato
    echelon: Echelon
    parent: Identifier | None = None
    name: str = ""


class StructureDocument(Struct, frozen=True, forbid_unknown_fields=True):
    structure_id: Identifier
    version: Annotated[int, Meta(ge=1)]
    units: Annotated[list[UnitSpec], Meta(min_length=1)]


@dataclass(frozen=True, slots=True)
class CommandStructure:
    """A validated structure with every unit's chain of superiors precomputed."""

    structure_id: str
    version: int
    content_hash: str
    units: dict[str, UnitSpec]
    superiors: dict[str, frozenset[str]]

    @classmethod
    def load(cls, raw: bytes) -> CommandStructure:
        """Parse and validate a YAML or JSON document; raises :class:`PolicyError`."""
        try:
            doc = msgspec.yaml.decode(raw, type=StructureDocument)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise PolicyError(f"invalid command structure: {exc}") from exc
        return cls.build(doc, "sha256:" + hashlib.sha256(raw).hexdigest())

    @classmethod
    def build(cls, doc: StructureDocument, content_hash: str) -> CommandStructure:
        units: dict[str, UnitSpec] = {}
        for unit in doc.units:
            if unit.id in units:
                raise PolicyError(f"invalid command structure: unit {unit.id} is listed twice")
            units[unit.id] = unit
        superiors: dict[str, frozenset[str]] = {}
        for unit in doc.units:
            chain: list[str] = []
            parent = unit.parent
            while parent is not None:
                if parent not in units:
                    raise PolicyError(
                        f"invalid command structure: {unit.id} has unknown parent {parent}"
                    )
                if parent == unit.id or parent in chain:
                    raise PolicyError(f"invalid command structure: cycle through {unit.id}")
                chain.append(parent)
                parent = units[parent].parent
            superiors[unit.id] = frozenset(chain)
        return cls(doc.structure_id, doc.version, content_hash, units, superiors)

    def is_superior(self, issuer: str, target: str) -> bool:
        return issuer in self.superiors.get(target, frozenset())

    def subordinates(self, unit: str) -> Iterable[str]:
        return (u for u, chain in self.superiors.items() if unit in chain)


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict with every reason, and the exact policy that produced it."""

    verdict: Verdict
    reasons: tuple[Reason, ...]
    policy_set_id: str
    policy_version: int
    policy_hash: str


class DirectivePolicy:
    """The narrow interface the enforcer calls: pure, deterministic, time is an input."""

    def decide(self, directive: DirectiveEvent, now: datetime) -> Decision:
        raise NotImplementedError


class ChainOfCommandPolicy(DirectivePolicy):
    """Minimal policy: known units, not expired, and the issuer above the target."""

    def __init__(self, structure: CommandStructure) -> None:
        self.structure = structure

    def decide(self, directive: DirectiveEvent, now: datetime) -> Decision:
        data = directive.data
        units = self.structure.units
        reasons: list[Reason] = []
        if data.issuer not in units:
            reasons.append(
                Reason("unknown-issuer", f"{data.issuer} is not in the command structure")
            )
        if data.target not in units:
            reasons.append(
                Reason("unknown-target", f"{data.target} is not in the command structure")
            )
        if data.expires <= now:
            reasons.append(
                Reason("expired", f"the directive expired at {data.expires.isoformat()}")
            )
        known = data.issuer in units and data.target in units
        if known and not self.structure.is_superior(data.issuer, data.target):
            reasons.append(
                Reason(
                    "chain-of-command",
                    f"{data.issuer} is not above {data.target} in the chain of command",
                )
            )
        s = self.structure
        verdict = Verdict.DENY if reasons else Verdict.ALLOW
        return Decision(verdict, tuple(reasons), s.structure_id, s.version, s.content_hash)
