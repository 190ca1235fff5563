"""Directives held for approvals, and recently decided ids: in memory for speed, in a
compacted topic for survival.

Two kinds of record share the topic: key ``<directive id>`` holds a held directive and its
approvals; key ``seen:<directive id>`` marks a decided directive until it expires, so a
replay of it is denied even after a restart. Tombstones remove both.

Every change to a held directive (held, approval added, released or denied) is written to
the held topic in the same transaction as the decision and the input offsets, into the
partition with the same number as the input partition it came from. An enforcer that is
assigned input partition *i* restores partition *i* of the held topic before deciding, so
held state moves with the partition across restarts and rebalances. The in-memory state of a
partition whose transaction fails is dropped and restored the same way: memory never holds
a change that Kafka does not.

Restoring a partition does not read it from its beginning. The state knows, for each record
still in force (the latest of a live key), a lower bound of its offset; the smallest of them
is the partition's *mark*, committed with the input offset in every transaction (see
:meth:`HeldDirectives.mark`). Every record before the mark is superseded or a tombstone, so
reading from the mark gives the same state as reading everything, whatever compaction has or
has not removed yet. A long-lived record would hold the mark back: once the partition holds
much more than its live state after the mark, the oldest live records are written again
(:meth:`HeldDirectives.stale`), so a restore reads about twice the live state, not the history.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from msgspec import Struct

from c2bus.core.decision import Approval
from c2bus.core.events import DirectiveEvent
from c2bus.core.labels import Classification


class HeldApproval(Struct, frozen=True, omit_defaults=True):
    approver: str
    nation: str
    roles: list[str]
    clearance: Classification | None = None


class HeldRecord(Struct, frozen=True):
    """The value of a held-topic record (key: directive id; tombstone when resolved)."""

    directive: DirectiveEvent
    approvals: list[HeldApproval] = []


class SeenRecord(Struct, frozen=True):
    expires: datetime


SEEN_PREFIX = "seen:"
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(HeldRecord)
_seen_decoder = msgspec.json.Decoder(SeenRecord)


def seen_key(directive_id: str) -> str:
    return SEEN_PREFIX + directive_id


def encode_seen(expires: datetime) -> bytes:
    return _encoder.encode(SeenRecord(expires))


@dataclass(frozen=True, slots=True)
class Held:
    directive: DirectiveEvent
    approvals: frozenset[Approval]
    partition: int

    def encode(self) -> bytes:
        approvals = sorted(
            (
                HeldApproval(a.approver, a.nation, sorted(a.roles), a.clearance)
                for a in self.approvals
            ),
            key=lambda a: (a.approver, a.nation),
        )
        return _encoder.encode(HeldRecord(self.directive, approvals))


class HeldDirectives:
    """The held directives and seen ids of the partitions an enforcer owns, each partition's
    apart, and where their records are in the held topic.

    A partition's state is its own: an id held or seen in one partition says nothing about
    another (the same id with another target lands elsewhere), so what a partition decides
    never depends on which other partitions the enforcer happens to own.
    """

    def __init__(self) -> None:
        self._held: dict[int, dict[str, Held]] = {}  # partition -> directive id -> held
        self._seen: dict[int, dict[str, datetime]] = {}  # partition -> directive id -> expires
        self._offsets: dict[int, dict[str, int]] = {}  # partition -> live key -> offset bound
        self._heaps: dict[int, list[tuple[int, str]]] = {}  # the same, oldest first (lazily)
        self._next: dict[int, int] = {}  # partition -> bound of the next record's offset
        self._generation: dict[int, int] = {}  # partition -> times its state was dropped

    def __len__(self) -> int:
        return sum(len(held) for held in self._held.values())

    def partitions(self) -> set[int]:
        return set(self._held) | set(self._seen)

    def held_in(self, partition: int) -> dict[str, Held]:
        """``partition``'s held directives by id (a view: do not change it)."""
        return self._held.get(partition, {})

    def seen_in(self, partition: int) -> dict[str, datetime]:
        """``partition``'s decided ids, with when each directive expires (a view)."""
        return self._seen.get(partition, {})

    def get(self, directive_id: str, partition: int | None = None) -> Held | None:
        """The directive held under ``directive_id`` in ``partition`` (in any, if None)."""
        partitions = self._held if partition is None else (partition,)
        for p in partitions:
            held = self.held_in(p).get(directive_id)
            if held is not None:
                return held
        return None

    def put(self, held: Held) -> None:
        self._held.setdefault(held.partition, {})[held.directive.id] = held
        self._live(held.partition, held.directive.id)

    def pop(self, directive_id: str, partition: int) -> Held | None:
        held = self._held.get(partition, {}).pop(directive_id, None)
        if held is not None:
            self._dead(partition, directive_id)
        return held

    def restore(self, records: Iterable[Any]) -> int:
        """Fold held-topic records (oldest first per partition) into the state; returns
        how many directives are held."""
        for record in records:
            key = record.key.decode() if record.key else ""
            partition = record.partition
            if key.startswith(SEEN_PREFIX):
                directive_id = key[len(SEEN_PREFIX) :]
                if record.value is None:
                    self.forget_seen(directive_id, partition)
                else:
                    expires = _seen_decoder.decode(record.value).expires
                    self.mark_seen(directive_id, expires, partition)
            elif record.value is None:
                self.pop(key, partition)
            else:
                value = _decoder.decode(record.value)
                approvals = frozenset(
                    Approval(a.approver, a.nation, frozenset(a.roles), a.clearance)
                    for a in value.approvals
                )
                self.put(Held(value.directive, approvals, partition))
            self.located(partition, key, record.offset, self.generation(partition))
        return len(self)

    def drop_partitions(self, partitions: set[int]) -> dict[str, Held]:
        """Forget the state of ``partitions``; returns the held directives dropped."""
        dropped: dict[str, Held] = {}
        for partition in partitions:
            dropped.update(self._held.pop(partition, {}))
            self._seen.pop(partition, None)
            self._offsets.pop(partition, None)
            self._heaps.pop(partition, None)
            self._next.pop(partition, None)
            self._generation[partition] = self.generation(partition) + 1
        return dropped

    def known(self, directive_id: str, partition: int | None = None) -> bool:
        """Already decided or held (in ``partition``; in any, if None): a new submission
        with this id is a replay."""
        partitions = self.partitions() if partition is None else (partition,)
        return any(
            directive_id in self.held_in(p) or directive_id in self.seen_in(p) for p in partitions
        )

    def mark_seen(self, directive_id: str, expires: datetime, partition: int) -> None:
        self._seen.setdefault(partition, {})[directive_id] = expires
        self._live(partition, seen_key(directive_id))

    def expired_seen(self, now: datetime, partition: int) -> list[str]:
        """Ids of ``partition`` whose directives expired: their replay marks can go."""
        return [d for d, expires in self.seen_in(partition).items() if expires <= now]

    def forget_seen(self, directive_id: str, partition: int) -> None:
        if self._seen.get(partition, {}).pop(directive_id, None) is not None:
            self._dead(partition, seen_key(directive_id))

    def expired(self, now: datetime, partition: int) -> list[Held]:
        """Directives of ``partition`` still held when they expired."""
        return [h for h in self.held_in(partition).values() if h.directive.data.expires <= now]

    # -- where the records are ---------------------------------------------------------------

    def generation(self, partition: int) -> int:
        """Changes each time ``partition``'s state is dropped: a delivery reported for an
        earlier generation belongs to a transaction that did not commit."""
        return self._generation.get(partition, 0)

    def located(self, partition: int, key: str, offset: int, generation: int) -> None:
        """A record for ``key`` was written at ``offset`` (by a transaction of ``generation``)."""
        if generation != self.generation(partition):
            return
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)
        offsets = self._offsets.get(partition)
        if offsets is not None and offsets.get(key, offset) < offset:
            offsets[key] = offset
            self._push(partition, offset, key)

    def mark(self, partition: int) -> int:
        """Where a restore of ``partition`` may start: no record before it is in force."""
        heap = self._heaps.get(partition)
        offsets = self._offsets.get(partition, {})
        while heap and offsets.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else self._next.get(partition, 0)

    def stale(self, partition: int, span: int, limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` of the oldest live records (key, value), to be written again,
        when more than ``span`` and twice the live records lie between the mark and the
        end; else nothing."""
        offsets = self._offsets.get(partition, {})
        behind = self._next.get(partition, 0) - self.mark(partition)
        if behind <= max(span, 2 * len(offsets)):
            return []
        oldest = heapq.nsmallest(limit, ((o, k) for k, o in offsets.items()))
        return [(key, self._value(partition, key)) for _, key in oldest]

    def _value(self, partition: int, key: str) -> bytes:
        if key.startswith(SEEN_PREFIX):
            return encode_seen(self._seen[partition][key[len(SEEN_PREFIX) :]])
        return self._held[partition][key].encode()

    def _live(self, partition: int, key: str) -> None:
        """``key`` is (still) in force: until its new record is located, its old one (or,
        for a new key, the next offset) bounds where it is."""
        offsets = self._offsets.setdefault(partition, {})
        if key not in offsets:
            offset = self._next.get(partition, 0)
            offsets[key] = offset
            self._push(partition, offset, key)

    def _dead(self, partition: int, key: str) -> None:
        self._offsets.get(partition, {}).pop(key, None)

    def _push(self, partition: int, offset: int, key: str) -> None:
        heap = self._heaps.setdefault(partition, [])
        heapq.heappush(heap, (offset, key))
        offsets = self._offsets[partition]
        if len(heap) > 2 * len(offsets) + 1024:  # superseded entries: rebuild
            heap[:] = [(o, k) for k, o in offsets.items()]
            heapq.heapify(heap)
