"""The policy-set document: what an alliance agrees, as data (YAML or JSON).

A policy set names its units and their organic chains of command (``parent``), the command
relationships nations transfer to alliance commanders for a time (``transfers``), which
relationships permit which directive kinds (``kinds``), national caveats, rules of
engagement, and approval rules. Nothing about who may direct whom is in the code.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from c2bus.core.fields import GeoPoint, Identifier, Timestamp

NationOrNato = Annotated[str, Meta(pattern=r"^(?:NATO|[A-Z]{3})$")]
Nation = Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
Area = Annotated[list[GeoPoint], Meta(min_length=3, max_length=1024)]


class Echelon(enum.Enum):
    STRATEGIC = "STRATEGIC"
    OPERATIONAL = "OPERATIONAL"
    TACTICAL = "TACTICAL"


class Relationship(enum.Enum):
    """Command relationships, strongest first.

    COMMAND is the organic chain (``parent`` links); OPCON, TACON and ADCON exist only
    where a transfer of authority grants them.
    """

    COMMAND = "COMMAND"
    OPCON = "OPCON"
    TACON = "TACON"
    ADCON = "ADCON"


class Unit(Struct, frozen=True, forbid_unknown_fields=True):
    id: Identifier
    nation: NationOrNato
    echelon: Echelon
    parent: Identifier | None = None
    name: str = ""


class Window(Struct, frozen=True, forbid_unknown_fields=True):
    """A validity window; ``until`` is exclusive. An open end is unbounded."""

    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None

    def contains(self, moment: datetime) -> bool:
        if self.valid_from is not None and moment < self.valid_from:
            return False
        return self.valid_until is None or moment < self.valid_until


class Transfer(Struct, frozen=True, forbid_unknown_fields=True):
    """A transfer of authority: ``relationship`` over ``unit`` (and its subordinates) to
    the alliance commander ``to`` (and the commanders above it), within ``window``."""

    id: Identifier
    unit: Identifier
    to: Identifier
    relationship: Relationship
    window: Window = Window()


class Kind(Struct, frozen=True, forbid_unknown_fields=True):
    """A directive kind: the relationships that permit it, and what else it needs."""

    permitted_by: Annotated[list[Relationship], Meta(min_length=1)]
    requires_area: bool = False
    roe_action: Identifier | None = None
    approvals: Annotated[int, Meta(ge=0, le=10)] = 0


class Caveat(Struct, frozen=True, forbid_unknown_fields=True):
    """A national caveat on the nation's units (or one unit and its subordinates)."""

    id: Identifier
    nation: Nation
    unit: Identifier | None = None
    forbidden_kinds: list[Identifier] = []
    allowed_area: Area | None = None
    window: Window | None = None
    red_card_kinds: list[Identifier] = []
    description: str = ""


class RoeRule(Struct, frozen=True, forbid_unknown_fields=True):
    """A rule of engagement authorising ``action`` inside ``area`` within ``window``."""

    id: Identifier
    action: Identifier
    area: Area
    window: Window = Window()
    nations: list[Nation] = []  # empty: every nation's units
    description: str = ""


class Roles(Struct, frozen=True, forbid_unknown_fields=True):
    """Which token roles count as approvals, and whether one person may be both."""

    approver: Identifier = "approver"
    red_card: Identifier = "red-card-holder"
    #: May a red-card holder also be one of a two-person rule's approvers? By default the
    #: nation's red card and the alliance's approvers are different people.
    red_card_may_approve: bool = False


class PolicyDocument(Struct, frozen=True, forbid_unknown_fields=True):
    policy_set_id: Identifier
    version: Annotated[int, Meta(ge=1)]
    units: Annotated[list[Unit], Meta(min_length=1)]
    kinds: dict[Identifier, Kind]
    transfers: list[Transfer] = []
    caveats: list[Caveat] = []
    rules_of_engagement: list[RoeRule] = []
    roles: Roles = Roles()
    clock_skew_s: Annotated[int, Meta(ge=0, le=3600)] = 30
    description: str = ""
