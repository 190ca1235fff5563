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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from msgspec import Struct

from c2bus.core.decision import Approval
from c2bus.core.events import DirectiveEvent


class HeldApproval(Struct, frozen=True):
    approver: str
    nation: str
    roles: list[str]


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
            (HeldApproval(a.approver, a.nation, sorted(a.roles)) for a in self.approvals),
            key=lambda a: (a.approver, a.nation),
        )
        return _encoder.encode(HeldRecord(self.directive, approvals))


class HeldDirectives:
    def __init__(self) -> None:
        self.by_id: dict[str, Held] = {}
        self.seen: dict[str, tuple[datetime, int]] = {}  # directive id -> (expires, partition)

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, directive_id: str) -> Held | None:
        return self.by_id.get(directive_id)

    def put(self, held: Held) -> None:
        self.by_id[held.directive.id] = held

    def pop(self, directive_id: str) -> Held | None:
        return self.by_id.pop(directive_id, None)

    def restore(self, records: Iterable[Any]) -> int:
        """Fold held-topic records (oldest first) into the state; returns how many remain."""
        for record in records:
            key = record.key.decode() if record.key else ""
            if key.startswith(SEEN_PREFIX):
                directive_id = key[len(SEEN_PREFIX) :]
                if record.value is None:
                    self.seen.pop(directive_id, None)
                else:
                    expires = _seen_decoder.decode(record.value).expires
                    self.seen[directive_id] = (expires, record.partition)
                continue
            if record.value is None:
                self.by_id.pop(key, None)
                continue
            value = _decoder.decode(record.value)
            self.by_id[key] = Held(
                value.directive,
                frozenset(
                    Approval(a.approver, a.nation, frozenset(a.roles)) for a in value.approvals
                ),
                record.partition,
            )
        return len(self.by_id)

    def drop_partitions(self, partitions: set[int]) -> dict[str, Held]:
        """Forget the state of ``partitions``; returns the held directives dropped."""
        dropped = {d: h for d, h in self.by_id.items() if h.partition in partitions}
        for directive_id in dropped:
            del self.by_id[directive_id]
        for directive_id in [d for d, (_, p) in self.seen.items() if p in partitions]:
            del self.seen[directive_id]
        return dropped

    def known(self, directive_id: str) -> bool:
        """Already decided or held: a new submission with this id is a replay."""
        return directive_id in self.by_id or directive_id in self.seen

    def mark_seen(self, directive_id: str, expires: datetime, partition: int) -> None:
        self.seen[directive_id] = (expires, partition)

    def expired_seen(self, now: datetime, partition: int) -> list[str]:
        """Ids of ``partition`` whose directives expired: their replay marks can go."""
        return [d for d, (expires, p) in self.seen.items() if p == partition and expires <= now]

    def forget_seen(self, directive_id: str) -> None:
        self.seen.pop(directive_id, None)

    def expired(self, now: datetime, partition: int) -> list[Held]:
        """Directives of ``partition`` still held when they expired."""
        return [
            h
            for h in self.by_id.values()
            if h.partition == partition and h.directive.data.expires <= now
        ]
