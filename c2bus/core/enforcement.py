"""The enforcer's decisions as a pure state machine: no asyncio, no Kafka.

One input at a time goes in: a record of the submitted topic (a directive or an approval), an
expiry tick of a partition, or a policy switch. What comes out is a :class:`Step`: the
records to write (decisions, DECIDED status steps, approved directives, changes to the held
state), at most one dead letter, and what was decided, for the metrics and logs. The lane
adapter (``c2bus.services.enforcer``) only feeds inputs in and writes a step's records in the
lane's transaction, in order; if that transaction fails it drops the partition's state
(:meth:`Enforcement.drop`) and restores it from the held topic (:meth:`Enforcement.restore`),
so the state here never holds a change that Kafka does not.

The rules, per partition and in input order:

- a record that does not decode is dead-lettered (``enforcer.decode``);
- an approval for a directive that is not held in the approval's partition is
  dead-lettered (``enforcer.approval``);
- an approval for a held directive re-evaluates it with every approval so far;
- a directive whose id is held or was decided (until it expires) in its partition is a
  replay: denied, with its input position, and nothing else changes (a partition's state is
  its own, so no decision depends on which other partitions the enforcer owns);
- any other directive is evaluated: HOLD keeps it in the held state, any other verdict ends
  it (a held directive is removed) and marks its id as seen until it expires; ALLOW also
  releases it to the approved topic, naming its decision;
- a tick denies the partition's held directives that expired and forgets the seen marks of
  directives that expired; then, if the partition's held topic holds much more after its
  restore mark than the live state, it writes the oldest live records again (unchanged), so
  the mark moves on (see :mod:`c2bus.core.held`); and, when one is due, it writes a
  checkpoint of the partition's audit chain (see :mod:`c2bus.core.audit`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from c2bus.core.audit import Chains, Head, checkpoint_event
from c2bus.core.codec import EventDecoder, encode_event
from c2bus.core.decision import Approval, Decision, DirectivePolicy
from c2bus.core.directives import approved_directive, decided_status, decision_event
from c2bus.core.events import (
    ApprovalEvent,
    DirectiveEvent,
    Envelope,
    SubmittedEvent,
    Verdict,
    event_type,
)
from c2bus.core.held import Held, HeldDirectives, encode_seen, seen_key
from c2bus.errors import InvalidEvent, PolicyError, UnverifiedRecord

#: A Kafka record's headers, as the adapter read them.
Headers = Sequence[tuple[str, bytes]] | None
#: Why an approval record is not attested by an edge that authenticated its approver (None:
#: it is): the adapter's signature check, given the record's value and headers.
Attest = Callable[[bytes, Headers], str | None]


def _unattested(value: bytes, headers: Headers) -> str:
    return "no trust store to check approvals with: none is counted"


SUBMITTED: EventDecoder[SubmittedEvent] = EventDecoder(SubmittedEvent)


class Stream(Enum):
    """Where a record goes; the adapter maps each to its topic."""

    DECISIONS = "decisions"
    STATUS = "status"
    APPROVED = "approved"
    HELD = "held"
    CHECKPOINTS = "checkpoints"


@dataclass(frozen=True, slots=True)
class Write:
    """One record to write in the lane's transaction. ``partition`` is set where the record
    must land in a given partition (held state follows its input partition); ``kind`` is the
    CloudEvents type of an event, None for held-state records."""

    stream: Stream
    key: bytes
    value: bytes | None
    partition: int | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The input record goes to the dead-letter topic as it came, with this stage and error."""

    stage: str
    error: InvalidEvent


@dataclass(frozen=True, slots=True)
class Decided:
    """A verdict recorded by a step, with what the metrics and logs say of it."""

    directive: DirectiveEvent
    decision: Decision
    approvals: int
    #: the input position (``<partition>-<offset>``) of a copy denied as a replay
    replay_of: str | None = None

    @property
    def final(self) -> bool:
        """A directive's own verdict (not a HOLD, not the denial of a copy): the end of its
        submitted-to-decided hop."""
        return self.replay_of is None and self.decision.verdict is not Verdict.HOLD


@dataclass(slots=True)
class Step:
    """What one input produced: write ``writes`` in order, then the dead letter if any."""

    writes: list[Write] = field(default_factory=list)
    decided: list[Decided] = field(default_factory=list)
    dead_letter: DeadLetter | None = None
    #: the CloudEvents type of the input, once decoded
    received: str | None = None

    def __bool__(self) -> bool:
        return bool(self.writes or self.dead_letter)


class Enforcement:
    """The decision state machine of one enforcer: the policy in force and, per input
    partition, the held directives and the ids seen.

    ``source`` and ``actor`` name the enforcer in the events it writes. A tick writes up to
    ``refresh_limit`` live held-state records again once more than ``refresh_span`` records
    (and twice the live ones) lie after the partition's restore mark, and a checkpoint of
    the partition's audit chain at most every ``checkpoint_interval`` while it moves on.
    ``attest`` checks that an approval was attested by an edge that authenticated its
    approver; without it, no approval counts.
    """

    def __init__(
        self,
        policy: DirectivePolicy | None,
        *,
        source: str,
        actor: str,
        refresh_span: int = 1_000,
        refresh_limit: int = 500,
        checkpoint_interval: timedelta = timedelta(seconds=30),
        attest: Attest = _unattested,
    ) -> None:
        self._policy = policy
        self.attest = attest
        self.source = source
        self.actor = actor
        self.held = HeldDirectives()
        self.chains = Chains(checkpoint_interval)
        self.refresh_span = refresh_span
        self.refresh_limit = refresh_limit

    # -- inputs -------------------------------------------------------------------------------

    def switch(self, policy: DirectivePolicy) -> None:
        """A new policy version is in force: it decides every input from now on."""
        self._policy = policy

    @property
    def policy(self) -> DirectivePolicy:
        """The version in force; with none, nothing is decided (fail closed)."""
        if self._policy is None:
            raise PolicyError("no alignment policy is in force: nothing can be decided")
        return self._policy

    def submitted(
        self,
        value: bytes | None,
        partition: int,
        offset: int,
        now: datetime,
        headers: Headers = None,
    ) -> Step:
        """Decide one record of the submitted topic, read at ``partition``/``offset``; an
        approval counts only if ``attest`` finds it attested (``headers`` are its)."""
        policy = self.policy
        step = Step()
        try:
            if value is None:
                raise InvalidEvent("record has no value")
            event = SUBMITTED.decode_event(value)
        except InvalidEvent as exc:
            step.dead_letter = DeadLetter("enforcer.decode", exc)
            return step
        step.received = event_type(event)
        if isinstance(event, ApprovalEvent):
            assert value is not None
            unattested = self.attest(value, headers)
            if unattested is not None:
                step.dead_letter = DeadLetter("enforcer.approval", UnverifiedRecord(unattested))
                return step
            self._approve(event, partition, now, step)
        elif self.held.known(event.id, partition):
            decision = policy.decide(event, now, replay=True)
            replay_of = f"{partition}-{offset}"
            self._decision(step, event, decision, now, 0, partition=partition, replay_of=replay_of)
        else:
            decision = policy.decide(event, now)
            self._record(step, Held(event, frozenset(), partition), decision, now)
        return step

    def tick(self, partition: int, now: datetime) -> Step:
        """Deny ``partition``'s held directives that expired; forget expired seen marks;
        checkpoint the partition's audit chain if that is due."""
        policy = self.policy
        step = Step()
        for held in self.held.expired(now, partition):
            self._record(step, held, policy.decide(held.directive, now, held.approvals), now)
        for directive_id in self.held.expired_seen(now, partition):
            key = seen_key(directive_id).encode()
            step.writes.append(Write(Stream.HELD, key, None, partition))
            self.held.forget_seen(directive_id, partition)
        for live, value in self.held.stale(partition, self.refresh_span, self.refresh_limit):
            step.writes.append(Write(Stream.HELD, live.encode(), value, partition))
        head = self.chains.due(partition, now)
        if head is not None:
            checkpoint = checkpoint_event(partition, head, now, self.source)
            step.writes.append(_event(Stream.CHECKPOINTS, checkpoint.key().encode(), checkpoint))
        return step

    # -- the partition's state, as Kafka holds it ----------------------------------------------

    def restore(self, records: Iterable[Any], heads: Mapping[int, Head]) -> int:
        """Fold held-topic records (oldest first per partition, each from its mark or its
        beginning) into the state, and continue each decisions partition's audit chain from
        its head in ``heads``; returns how many are held."""
        self.chains.restore(heads)
        return self.held.restore(records)

    def mark(self, partition: int) -> int:
        """The held-topic offset a restore of ``partition`` may start from, as of now: commit
        it with the transaction."""
        return self.held.mark(partition)

    def drop(self, partitions: set[int]) -> None:
        """Forget the state of ``partitions`` (revoked, or their transaction failed)."""
        self.held.drop_partitions(partitions)
        self.chains.drop(partitions)

    # -- the rules ----------------------------------------------------------------------------

    def _approve(self, event: ApprovalEvent, partition: int, now: datetime, step: Step) -> None:
        held = self.held.get(event.data.directive_id, partition)
        if held is None:
            reason = f"directive {event.data.directive_id} is not held for approval"
            step.dead_letter = DeadLetter("enforcer.approval", InvalidEvent(reason))
            return
        data = event.data
        approval = Approval(data.approver, data.nation, frozenset(data.roles), data.clearance)
        held = Held(held.directive, held.approvals | {approval}, held.partition)
        self._record(step, held, self.policy.decide(held.directive, now, held.approvals), now)

    def _record(self, step: Step, held: Held, decision: Decision, now: datetime) -> None:
        """A decision and its consequences: hold, or end a hold and release."""
        directive = held.directive
        self._decision(
            step, directive, decision, now, len(held.approvals), partition=held.partition
        )
        key = directive.id.encode()
        if decision.verdict is Verdict.HOLD:
            self.held.put(held)
            step.writes.append(Write(Stream.HELD, key, held.encode(), held.partition))
            return
        if self.held.pop(directive.id, held.partition) is not None:
            step.writes.append(Write(Stream.HELD, key, None, held.partition))
        # Remember the id until the directive expires: a copy of it is a replay.
        expires = directive.data.expires
        self.held.mark_seen(directive.id, expires, held.partition)
        seen = seen_key(directive.id).encode()
        step.writes.append(Write(Stream.HELD, seen, encode_seen(expires), held.partition))
        if decision.verdict is Verdict.ALLOW:
            approved = approved_directive(directive, now)
            step.writes.append(_event(Stream.APPROVED, directive.data.target.encode(), approved))

    def _decision(
        self,
        step: Step,
        directive: DirectiveEvent,
        decision: Decision,
        now: datetime,
        approvals: int,
        *,
        partition: int,
        replay_of: str | None = None,
    ) -> None:
        """The decision (audit trail, the next link of its partition's chain) and the
        DECIDED step of the directive's lifecycle."""
        key = directive.id.encode()
        link = self.chains.head(partition).link(partition)
        audit = decision_event(
            directive, decision, now, self.source, approvals, replay_of=replay_of, chain=link
        )
        status = decided_status(
            directive, decision, now, self.actor, approvals, replay_of=replay_of
        )
        value = encode_event(audit)
        self.chains.append(partition, link.seq, value)
        step.writes.append(Write(Stream.DECISIONS, key, value, partition, kind=event_type(audit)))
        step.writes.append(_event(Stream.STATUS, key, status))
        step.decided.append(Decided(directive, decision, approvals, replay_of))


def _event(stream: Stream, key: bytes, event: Envelope) -> Write:
    return Write(stream, key, encode_event(event), kind=event_type(event))
