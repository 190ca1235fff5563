"""The event contracts: CloudEvents 1.0 envelopes (JSON structured mode) with typed data.

Every event on a c2bus topic is one JSON object::

    {"specversion": "1.0", "id": "…", "source": "…", "type": "c2bus.sa.track.v1",
     "time": "2026-11-26T07:00:00Z", "classification": "NATO SECRET",
     "releasableto": "NATO", "subject": "…", "data": {…}}

``type`` selects the data shape (a tagged union), so decoding validates as it parses: a
document either becomes one of the typed events below or is rejected with the JSON path of
the first problem. The security label (``classification``, ``releasableto``) is mandatory on
every event: an event without a valid label is never delivered.

These structs are the source of truth; ``schemas/`` holds the JSON Schemas generated from
them (``c2bus schemas export``), and a test keeps the two identical.
"""

from __future__ import annotations

import enum
import functools
from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta, Struct

from c2bus.core.fields import (
    NAMESPACE_SEPARATOR,
    Bearing,
    EventId,
    GeoPoint,
    Identifier,
    Percent,
    ReleasableTo,
    ScopedIdentifier,
    Speed,
    Text,
    Timestamp,
)
from c2bus.core.labels import Classification, SecurityLabel, parse_releasability
from c2bus.core.policy.model import PolicyDocument

# --- SA data ------------------------------------------------------------------------------


class StandardIdentity(enum.Enum):
    """Track identity (APP-6 / STANAG 1241 standard identities)."""

    PENDING = "PENDING"
    UNKNOWN = "UNKNOWN"
    ASSUMED_FRIEND = "ASSUMED_FRIEND"
    FRIEND = "FRIEND"
    NEUTRAL = "NEUTRAL"
    SUSPECT = "SUSPECT"
    HOSTILE = "HOSTILE"


class TrackDomain(enum.Enum):
    AIR = "AIR"
    SURFACE = "SURFACE"
    SUBSURFACE = "SUBSURFACE"
    LAND = "LAND"
    SPACE = "SPACE"


class Readiness(enum.Enum):
    """Unit readiness as commonly reported (fully / partly / not operational)."""

    FULLY_OPERATIONAL = "FULLY_OPERATIONAL"
    PARTLY_OPERATIONAL = "PARTLY_OPERATIONAL"
    NOT_OPERATIONAL = "NOT_OPERATIONAL"


class TrackData(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A sensor track: an entity observed at a position."""

    #: in its publisher's namespace (``<unit>~<track>``) when it came through the ingest
    track_id: ScopedIdentifier
    position: GeoPoint
    domain: TrackDomain
    identity: StandardIdentity = StandardIdentity.UNKNOWN
    course_deg: Bearing | None = None
    speed_mps: Speed | None = None
    sensor: Identifier | None = None


class PositionData(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """An own-force position report from a unit."""

    unit_id: Identifier
    position: GeoPoint
    heading_deg: Bearing | None = None
    speed_mps: Speed | None = None


class UnitStatusData(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A unit's reported status."""

    unit_id: Identifier
    readiness: Readiness
    personnel_pct: Percent | None = None
    remarks: Text | None = None


# --- directives and their decisions -------------------------------------------------------


class Verdict(enum.Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    HOLD = "HOLD"


class DirectiveState(enum.Enum):
    """Lifecycle of a directive after submission."""

    DECIDED = "DECIDED"
    DELIVERED = "DELIVERED"
    WILCO = "WILCO"
    CANTCO = "CANTCO"
    HAVE_DO = "HAVE_DO"
    EXPIRED = "EXPIRED"


#: A directive's parameter: a short string (at most 128 characters), a number or a flag.
ParamValue = Annotated[str, Meta(max_length=128)] | int | float | bool
#: At most 32 parameters: with the area's 1,024 points and the 4,096-character text, they
#: bound a directive, so the largest a schema accepts fits the gateway's request limit.
Parameters = Annotated[dict[Identifier, ParamValue], Meta(max_length=32)]


class DirectiveData(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """An order from an issuing command to a target unit.

    ``kind`` (e.g. ``MOVE``, ``ENGAGE``) is what the alignment policy reasons about; which
    kinds exist, and who may issue them to whom, is policy, not code.
    """

    kind: Identifier
    issuer: Identifier
    target: Identifier
    expires: Timestamp
    valid_from: Timestamp | None = None
    area: Annotated[list[GeoPoint], Meta(min_length=3, max_length=1024)] | None = None
    text: Text = ""
    parameters: Parameters = msgspec.field(default_factory=dict)


class Reason(Struct, frozen=True, forbid_unknown_fields=True):
    """One rule a directive violated (or, for HOLD, is waiting on), in words."""

    rule: Identifier
    message: Text


Digest = Annotated[str, Meta(pattern=r"^sha256:[0-9a-f]{64}$")]


class ChainLink(Struct, frozen=True, forbid_unknown_fields=True):
    """A decision's place in the audit chain of its partition of the decisions topic: its
    sequence number there and the digest of the record before it (see
    :mod:`c2bus.core.audit`). The signature over the record covers the link."""

    partition: Annotated[int, Meta(ge=0)]
    seq: Annotated[int, Meta(ge=0)]
    prev: Digest


class CheckpointData(Struct, frozen=True, forbid_unknown_fields=True):
    """Where the audit chain of one decisions partition stood when its writer vouched for
    it: the sequence number and digest of the partition's newest decision then (see
    :mod:`c2bus.core.audit`). A log that ends before ``seq``, or holds another record
    there, has lost or changed records the checkpoint was written after."""

    partition: Annotated[int, Meta(ge=0)]
    seq: Annotated[int, Meta(ge=0)]
    head: Digest


class DecisionData(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The enforcer's verdict on one directive, with every reason and the policy it used,
    and (from enforcers that chain their decisions) its link in the audit chain."""

    directive_id: EventId
    verdict: Verdict
    issuer: Identifier
    target: Identifier
    kind: Identifier
    policy_set_id: Identifier
    policy_version: Annotated[int, Meta(ge=0)]
    policy_hash: Digest
    reasons: list[Reason] = msgspec.field(default_factory=list)
    chain: ChainLink | None = None


class DirectiveStatusData(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One step in a directive's lifecycle, reported by ``actor``.

    ``issuer`` and ``target`` repeat the directive's, so a gateway can route the step to
    the consoles concerned without remembering every directive.
    """

    directive_id: EventId
    state: DirectiveState
    actor: Identifier
    issuer: Identifier
    target: Identifier
    reason: Text | None = None


class ApprovalData(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """An approval of a held directive.

    ``approver``, ``nation`` and ``roles`` are the approver's verified identity, stamped by
    the service that authenticated them (never taken from a request body). ``target`` is the
    directive's target unit: approvals are keyed like directives, so they share a partition
    and arrive in order with what they approve.
    """

    directive_id: EventId
    target: Identifier
    approver: Annotated[str, Meta(min_length=1, max_length=256)]
    nation: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
    roles: list[Identifier] = msgspec.field(default_factory=list)
    comment: Text = ""
    #: The approver's clearance, as verified: an approval without one never counts.
    clearance: Classification | None = None


class PolicySetData(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A published version of an alignment-policy set (see ``core.policy.model``).

    ``replaces`` is the version this one supersedes (optimistic concurrency); the content
    hash is over the document as published.
    """

    policy_set_id: Identifier
    version: Annotated[int, Meta(ge=1)]
    document: PolicyDocument
    replaces: Annotated[int, Meta(ge=0)] | None = None


# --- envelopes ----------------------------------------------------------------------------


class Envelope(Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    """CloudEvents 1.0 attributes shared by every c2bus event.

    ``classification`` and ``releasableto`` are CloudEvents extension attributes carrying the
    security label; both are required.
    """

    specversion: Literal["1.0"]
    id: EventId
    source: Annotated[str, Meta(min_length=1, max_length=1024)]
    time: Timestamp
    classification: Classification
    releasableto: ReleasableTo
    subject: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None
    #: On an approved directive: the id of the ALLOW decision that let it through, and
    #: when it was decided (a gateway refuses a release older than its replay horizon).
    decisionid: EventId | None = None
    decidedat: Timestamp | None = None

    #: Short name of the topic family this event belongs on (see ``adapters.topics``).
    topic_role: ClassVar[str]

    @property
    def label(self) -> SecurityLabel:
        """The parsed security label (the attributes were validated on decode)."""
        return security_label(self.classification, self.releasableto)

    def key(self) -> str:
        """The Kafka record key: per-key order is what each topic promises."""
        raise NotImplementedError


class TrackEvent(Envelope, frozen=True, kw_only=True, tag="c2bus.sa.track.v1"):
    topic_role: ClassVar[str] = "sa"
    data: TrackData

    def key(self) -> str:
        return self.data.track_id


class PositionEvent(Envelope, frozen=True, kw_only=True, tag="c2bus.sa.position.v1"):
    topic_role: ClassVar[str] = "sa"
    data: PositionData

    def key(self) -> str:
        return self.data.unit_id


class UnitStatusEvent(Envelope, frozen=True, kw_only=True, tag="c2bus.sa.unit-status.v1"):
    topic_role: ClassVar[str] = "sa"
    data: UnitStatusData

    def key(self) -> str:
        return self.data.unit_id


class DirectiveEvent(Envelope, frozen=True, kw_only=True, tag="c2bus.directive.v1"):
    """A directive as issued; its CloudEvents ``id`` is the directive id."""

    topic_role: ClassVar[str] = "directives.submitted"
    data: DirectiveData

    def key(self) -> str:
        return self.data.target


class DecisionEvent(Envelope, frozen=True, kw_only=True, tag="c2bus.decision.v1"):
    topic_role: ClassVar[str] = "decisions"
    data: DecisionData

    def key(self) -> str:
        return self.data.directive_id


class CheckpointEvent(Envelope, frozen=True, kw_only=True, tag="c2bus.audit.checkpoint.v1"):
    """An enforcer's signed checkpoint of a decisions partition's audit chain; it names
    nothing but that partition's place and digest, so it is NATO UNCLASSIFIED."""

    topic_role: ClassVar[str] = "audit.checkpoints"
    data: CheckpointData

    def key(self) -> str:
        return str(self.data.partition)


class DirectiveStatusEvent(Envelope, frozen=True, kw_only=True, tag="c2bus.directive.status.v1"):
    topic_role: ClassVar[str] = "directives.status"
    data: DirectiveStatusData

    def key(self) -> str:
        return self.data.directive_id


class PolicySetEvent(Envelope, frozen=True, kw_only=True, tag="c2bus.policy.set.v1"):
    topic_role: ClassVar[str] = "policy"
    data: PolicySetData

    def key(self) -> str:
        return self.data.policy_set_id


class ApprovalEvent(Envelope, frozen=True, kw_only=True, tag="c2bus.directive.approval.v1"):
    topic_role: ClassVar[str] = "directives.submitted"
    data: ApprovalData

    def key(self) -> str:
        return self.data.target


SaEvent = TrackEvent | PositionEvent | UnitStatusEvent
SubmittedEvent = DirectiveEvent | ApprovalEvent
AnyEvent = (
    TrackEvent
    | PositionEvent
    | UnitStatusEvent
    | DirectiveEvent
    | ApprovalEvent
    | DecisionEvent
    | CheckpointEvent
    | DirectiveStatusEvent
    | PolicySetEvent
)

#: Every concrete event class, in the order the schemas list them.
EVENT_TYPES: tuple[type[Envelope], ...] = (
    TrackEvent,
    PositionEvent,
    UnitStatusEvent,
    DirectiveEvent,
    ApprovalEvent,
    DecisionEvent,
    CheckpointEvent,
    DirectiveStatusEvent,
    PolicySetEvent,
)


@functools.lru_cache(maxsize=4096)
def security_label(classification: Classification, releasableto: str) -> SecurityLabel:
    """The label of a classification and ``releasableto`` attribute: parsed once per
    distinct pair (events carry few distinct labels), not once per event."""
    return SecurityLabel(classification, parse_releasability(releasableto))


def type_tag(cls: type[Envelope]) -> str:
    """The CloudEvents ``type`` an event class is tagged with (e.g. ``c2bus.sa.track.v1``)."""
    return str(msgspec.inspect.type_info(cls).tag)  # type: ignore[attr-defined]


#: Every event class's CloudEvents ``type``, looked up once per event on the hot paths.
TYPE_TAGS: dict[type[Envelope], str] = {cls: type_tag(cls) for cls in EVENT_TYPES}


#: Between a directive id's issuer and the id its submitter chose: no unit id holds one.
ISSUER_SEPARATOR = NAMESPACE_SEPARATOR
MAX_EVENT_ID = 256


def issuer_scoped(issuer: str, directive_id: str) -> str:
    """The id a directive is known by: the id its submitter chose, in its issuer's
    namespace (``<issuer>~<id>``), so that no unit can take, and so replay-block, another
    unit's ids. A resubmission that names the scoped id keeps it. ValueError if the result
    is longer than an event id may be."""
    prefix = issuer + ISSUER_SEPARATOR
    scoped = directive_id if directive_id.startswith(prefix) else prefix + directive_id
    if len(scoped) > MAX_EVENT_ID:
        raise ValueError(
            f"the directive id with its issuer's namespace is longer than {MAX_EVENT_ID}"
        )
    return scoped


#: How far ahead of a reader's clock an SA report may be dated; beyond, it is refused (a
#: report from the future would stand as the newest state of its entity until then).
SA_CLOCK_SKEW = timedelta(seconds=30)


def dated_ahead(event: Envelope, now: datetime) -> str | None:
    """Why an SA report is dated too far in the future to take (None: it is not)."""
    if event.time <= now + SA_CLOCK_SKEW:
        return None
    ahead = (event.time - now).total_seconds()
    return (
        f"dated {ahead:.0f}s ahead of this clock (at most {SA_CLOCK_SKEW.total_seconds():.0f}s "
        "is taken)"
    )


def event_type(event: Envelope) -> str:
    """An event's CloudEvents ``type``."""
    return TYPE_TAGS[type(event)]
