"""Directives held for approvals: in memory for speed, in a compacted topic for survival.

Every change to a held directive (held, approval added, released or denied) is written to
the held topic in the same transaction as the decision and the input offsets, into the
partition with the same number as the input partition it came from. An enforcer that is
assigned input partition *i* restores partition *i* of the held topic before deciding, so
held state moves with the partition across restarts and rebalances.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from msgspec import Struct

from ..domain.decision import Approval
from ..domain.events import DirectiveEvent


class HeldApproval(Struct, frozen=True):
    approver: str
    nation: str
    roles: list[str]


class HeldRecord(Struct, frozen=True):
    """The value of a held-topic record (key: directive id; tombstone when resolved)."""

    directive: DirectiveEvent
    approvals: list[HeldApproval] = []


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(HeldRecord)


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
        """Forget the held directives of ``partitions``; returns what was dropped."""
        dropped = {d: h for d, h in self.by_id.items() if h.partition in partitions}
        for directive_id in dropped:
            del self.by_id[directive_id]
        return dropped

    def expired(self, now: datetime) -> list[Held]:
        return [h for h in self.by_id.values() if h.directive.data.expires <= now]
