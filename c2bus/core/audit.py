"""The audit chain of the decisions topic, and its verification: pure, no I/O.

Each partition *p* of the decisions topic is written by one lane only, the lane of input
partition *p* (its transactional producer fences every earlier owner), so its records form
a sequence. Every decision names its place in it (:class:`~c2bus.core.events.ChainLink`):
its partition, its sequence number and the SHA-256 digest of the record value before it.
The enforcer signs each record, link included. So a record changed, inserted, replayed or
moved to another partition breaks the chain where it stands, and a record removed from the
middle leaves a gap in the sequence numbers; :class:`Verifier` names each such record.

A partition starts at :data:`START` (no record before, sequence ``-1``). A lane set up from
Kafka continues from :func:`head_of` the partition's tail: the newest record there whose
signature verifies (a forged record at the tail is passed over, so the chain never grows
from it). Records written before enforcers chained their decisions carry no link; a
partition may start with such records, but once a link appears every record must carry one.

The chain shows what was changed or removed before its newest record, not that records
were removed from its end. So the writer of a partition also signs a *checkpoint* at
intervals (:meth:`Chains.due`): the sequence number and digest of its newest decision, on a
topic of its own. A decisions partition that ends before its newest checkpoint's sequence
number, or holds another record there, lost or changed records after the checkpoint was
written (:meth:`Verifier.finish`); what was written after the newest checkpoint is covered
by the next one, so the interval bounds what could go unnoticed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from c2bus.core.cloudevents import new_event
from c2bus.core.codec import EventDecoder
from c2bus.core.events import ChainLink, CheckpointData, CheckpointEvent, DecisionEvent
from c2bus.core.labels import Classification
from c2bus.errors import InvalidEvent

#: The digest a partition's first link names as the record before it: there is none.
GENESIS = "sha256:" + "0" * 64

#: Why a record's signature does not verify (None: it does), given its value and headers.
Check = Callable[[bytes | None, Sequence[tuple[str, bytes]] | None], str | None]

DECISIONS: EventDecoder[DecisionEvent] = EventDecoder(DecisionEvent)
CHECKPOINTS: EventDecoder[CheckpointEvent] = EventDecoder(CheckpointEvent)


def digest(value: bytes) -> str:
    """The digest the next link names: SHA-256 over the record value as written."""
    return "sha256:" + hashlib.sha256(value).hexdigest()


@dataclass(frozen=True, slots=True)
class Head:
    """The newest record of a partition's chain: its sequence number and digest."""

    seq: int
    digest: str

    def link(self, partition: int) -> ChainLink:
        """The link of the record that follows this one."""
        return ChainLink(partition=partition, seq=self.seq + 1, prev=self.digest)


#: An empty partition: the first link has sequence number 0 and names :data:`GENESIS`.
START = Head(-1, GENESIS)


class ChainUnknown(LookupError):
    """A decision for a partition whose chain head was not restored: a lane set up without
    reading the decisions topic's tail would fork the chain, so nothing is decided."""


class Chains:
    """The chain head of each decisions partition this enforcer writes, and the sequence
    number it last vouched for in a checkpoint."""

    def __init__(self, checkpoint_interval: timedelta = timedelta(seconds=30)) -> None:
        self.checkpoint_interval = checkpoint_interval
        self._heads: dict[int, Head] = {}
        self._vouched: dict[int, int] = {}
        self._next_checkpoint: dict[int, datetime] = {}

    def restore(self, heads: Mapping[int, Head]) -> None:
        """Continue from ``heads``, read back from the partitions' tails. Only what this
        writer appends is vouched for: a restored head is the tail as it was found, and a
        checkpoint of it would vouch for a tail cut short before the restore."""
        self._heads.update(heads)
        for partition, head in heads.items():
            self._vouched[partition] = head.seq
            self._next_checkpoint.pop(partition, None)

    def drop(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._heads.pop(partition, None)
            self._vouched.pop(partition, None)
            self._next_checkpoint.pop(partition, None)

    def head(self, partition: int) -> Head:
        head = self._heads.get(partition)
        if head is None:
            raise ChainUnknown(f"the audit chain of decisions partition {partition} is unknown")
        return head

    def append(self, partition: int, seq: int, value: bytes) -> None:
        """The record with link ``seq`` was written (in the open transaction)."""
        self._heads[partition] = Head(seq, digest(value))

    def due(self, partition: int, now: datetime) -> Head | None:
        """The head to vouch for in a checkpoint now, if one is due: the chain moved on since
        the last checkpoint, and the interval passed since it (the first after a restore is
        due at once). The caller writes it in the open transaction, with the records it
        vouches for or after them; :meth:`drop` forgets it if that transaction fails."""
        head = self._heads.get(partition)
        if head is None or head.seq <= self._vouched.get(partition, -1):
            return None
        due_at = self._next_checkpoint.get(partition)
        if due_at is not None and now < due_at:
            return None
        self._vouched[partition] = head.seq
        self._next_checkpoint[partition] = now + self.checkpoint_interval
        return head


def checkpoint_event(partition: int, head: Head, now: datetime, source: str) -> CheckpointEvent:
    """The checkpoint that vouches for ``head`` of decisions partition ``partition``."""
    return new_event(
        CheckpointEvent,
        id=f"checkpoint:{partition}:{head.seq}",
        source=source,
        time=now,
        classification=Classification.NATO_UNCLASSIFIED,
        releasableto="NATO",
        subject=f"decisions/{partition}",
        data=CheckpointData(partition=partition, seq=head.seq, head=head.digest),
    )


def head_of(records: Sequence[Any], check: Check) -> Head | None:
    """The chain head a partition's tail shows (``records`` oldest first, one partition):
    the newest record whose signature verifies; None when none in ``records`` does."""
    for record in reversed(records):
        if record.value is None or check(record.value, record.headers) is not None:
            continue
        try:
            link = DECISIONS.decode_event(record.value).data.chain
        except InvalidEvent:
            continue
        return Head(-1 if link is None else link.seq, digest(record.value))
    return None


@dataclass(frozen=True, slots=True)
class Finding:
    """A record that breaks the chain: where it is and what is wrong with it. ``topic`` is
    set for a record of the checkpoints topic; a finding names the decisions topic else."""

    partition: int
    offset: int
    problem: str
    topic: str | None = None

    def __str__(self) -> str:
        where = "" if self.topic is None else f"{self.topic} "
        return f"{where}partition {self.partition} offset {self.offset}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed checkpoint read back: the head it vouches for, and where it was read."""

    partition: int
    seq: int
    head: str
    offset: int
    time: datetime

    def __str__(self) -> str:
        return f"the checkpoint at offset {self.offset} ({self.time:%Y-%m-%d %H:%M:%SZ})"


def newest_checkpoints(
    records: Iterable[Any], check: Check, topic: str
) -> tuple[dict[int, Checkpoint], list[Finding]]:
    """The checkpoint vouching for the furthest sequence number of each decisions partition,
    among ``records`` of the checkpoints topic ``topic``; and each of them that is unsigned,
    badly signed or no checkpoint (those vouch for nothing)."""
    newest: dict[int, Checkpoint] = {}
    findings: list[Finding] = []
    for record in records:
        unsigned = check(record.value, record.headers)
        if unsigned is not None:
            problem = f"signature: {unsigned}"
        else:
            try:
                event = CHECKPOINTS.decode_event(record.value)
            except InvalidEvent as exc:
                problem = f"not a checkpoint: {exc}"
            else:
                problem = None
        if problem is not None:
            findings.append(Finding(record.partition, record.offset, problem, topic))
            continue
        data = event.data
        found = newest.get(data.partition)
        if found is None or data.seq > found.seq:
            newest[data.partition] = Checkpoint(
                data.partition, data.seq, data.head, record.offset, event.time
            )
    return newest, findings


@dataclass(slots=True)
class _Partition:
    head: Head | None = None
    chained: bool = False
    records: int = 0


@dataclass
class Verifier:
    """Checks the records of the decisions topic, fed in offset order per partition.

    ``from_start`` says the partitions are read from their beginning: each first link must
    be sequence 0 after :data:`GENESIS`. Read from later (``--since``), a partition is
    anchored at its first record whose signature verifies; nothing before it is checked. A
    bad record does not move the head, so the records after it are checked against the last
    good one and only the bad record is named.
    """

    check: Check
    from_start: bool = True
    #: the newest checkpoint of each partition (:func:`newest_checkpoints`)
    checkpoints: Mapping[int, Checkpoint] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    _partitions: dict[int, _Partition] = field(default_factory=dict)

    def feed(self, partition: int, offset: int, value: bytes | None, headers: Any) -> None:
        state = self._partitions.setdefault(partition, _Partition())
        state.records += 1
        problem = self._problem(partition, state, value, headers)
        if problem is not None:
            self.findings.append(Finding(partition, offset, problem))

    def _problem(
        self, partition: int, state: _Partition, value: bytes | None, headers: Any
    ) -> str | None:
        if value is None:
            return "a record with no value"
        unsigned = self.check(value, headers)
        if unsigned is not None:
            return f"signature: {unsigned}"
        try:
            link = DECISIONS.decode_event(value).data.chain
        except InvalidEvent as exc:
            return f"not a decision: {exc}"
        problem = _broken(partition, link, state.head, state)
        if problem is None and state.head is None and self.from_start:
            # the first signed record of a partition read from its beginning: the chain must
            # begin there; if it does not, records before it are lost, and it anchors the rest
            problem = _broken(partition, link, START, state)
            self._advance(state, link, value)
            if problem is None:
                return self._unlike_checkpoint(partition, state.head)
            return f"the chain does not begin here ({problem}): records before it lost"
        if problem is None:
            self._advance(state, link, value)
            return self._unlike_checkpoint(partition, state.head)
        return problem

    @staticmethod
    def _advance(state: _Partition, link: ChainLink | None, value: bytes) -> None:
        state.head = Head(-1 if link is None else link.seq, digest(value))
        state.chained |= link is not None

    def _unlike_checkpoint(self, partition: int, head: Head | None) -> str | None:
        """A record that holds its checkpoint's sequence number with another digest: the
        chain was cut and written again from before the checkpoint (the chain goes on from
        it, so only this record is named)."""
        checkpoint = self.checkpoints.get(partition)
        if head is None or checkpoint is None or head.seq != checkpoint.seq:
            return None
        if head.digest == checkpoint.head:
            return None
        return (
            f"seq {head.seq} is not the record {checkpoint} vouches for: the partition was "
            "cut back and written again"
        )

    def finish(self, ends: Mapping[int, int]) -> None:
        """Name each partition that ends before its newest checkpoint's sequence number, at
        its end offset in ``ends``: records were removed from its end. Read from part-way,
        a partition with no record read is not judged (its records may all lie before)."""
        for partition, checkpoint in sorted(self.checkpoints.items()):
            state = self._partitions.get(partition, _Partition())
            if state.head is None and not self.from_start:
                continue
            seq = -1 if state.head is None else state.head.seq
            if seq >= checkpoint.seq:
                continue
            ends_at = "no chained record" if seq < 0 else f"seq {seq}"
            self.findings.append(
                Finding(
                    partition,
                    ends.get(partition, 0),
                    f"records removed from the end: {checkpoint} vouches for seq "
                    f"{checkpoint.seq}, the partition ends at {ends_at}",
                )
            )

    @property
    def records(self) -> int:
        return sum(p.records for p in self._partitions.values())

    @property
    def partitions(self) -> dict[int, int]:
        """How many records each partition fed had."""
        return {p: state.records for p, state in sorted(self._partitions.items())}

    def heads(self) -> dict[int, Head | None]:
        return {p: state.head for p, state in sorted(self._partitions.items())}


def _broken(
    partition: int, link: ChainLink | None, head: Head | None, state: _Partition
) -> str | None:
    """What is wrong with a signed decision's link, given the chain's head before it."""
    if link is None:
        return "no chain link, after chained records" if state.chained else None
    if link.partition != partition:
        return f"its link names partition {link.partition}: a record moved from there"
    if head is None:
        return None  # the anchor of a partition read from part-way
    if link.prev != head.digest:
        return (
            f"chain broken: names {link.prev[:19]}… as the record before it, "
            f"which is {head.digest[:19]}…"
        )
    if link.seq != head.seq + 1:
        return f"sequence: {link.seq} where {head.seq + 1} comes next"
    return None
