"""One lane per input partition: the unit of ownership, of transactions and of recovery.

A lane owns a transactional producer whose id names the input partition
(``<group>.p<partition>``), not the process. Whoever is assigned partition *i* starts that
producer, and starting it fences every earlier holder of the id and completes (commits or
aborts) any transaction it left open, before this owner reads the committed offset and the
held state. That is what keeps a paused or partitioned enforcer (a zombie) from committing
anything once another has taken its partition, even though aiokafka's transactional offset
commits carry only the group id (no generation to fence on). See ``docs/exactly-once.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

FENCING_ERRORS = (ProducerFenced, InvalidProducerEpoch)


def _retrieve(delivery: asyncio.Future[Any]) -> None:
    """Mark a delivery's error as seen: the transaction's outcome already reports it."""
    if not delivery.cancelled():
        delivery.exception()


@dataclass
class Tally:
    """What the open transaction decided and wrote: reported in the metrics once it
    commits, forgotten if it aborts."""

    verdicts: Counter[str] = field(default_factory=Counter)
    #: by (verdict, rule cited)
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: events written, by (topic, CloudEvents type)
    produced: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: submission times of the directives decided
    submitted: list[datetime] = field(default_factory=list)

    def clear(self) -> None:
        self.verdicts.clear()
        self.rules.clear()
        self.produced.clear()
        self.submitted.clear()


@dataclass(eq=False)
class Lane:
    partition: int
    #: the lane's own transactional producer (exactly-once), or None (shared producer)
    producer: AIOKafkaProducer | None = None
    #: the next input offset to decide; -1 until the lane is set up
    position: int = -1
    ready: bool = False
    in_transaction: bool = False
    #: something was written or consumed since the last commit
    dirty: bool = False
    #: what the open transaction decided and wrote, counted once it commits
    tally: Tally = field(default_factory=Tally)
    #: deliveries of the open transaction (or, at least once, since the last flush)
    sent: list[asyncio.Future[Any]] = field(default_factory=list)
    failures: int = 0
    retry_at: float = 0.0

    def track(self, delivery: asyncio.Future[Any]) -> None:
        self.sent.append(delivery)

    def settle(self) -> bool:
        """Forget the deliveries (their errors are retrieved); True if any was fenced."""
        fenced = False
        for delivery in self.sent:
            if delivery.done():
                with contextlib.suppress(asyncio.CancelledError):
                    fenced |= isinstance(delivery.exception(), FENCING_ERRORS)
            else:
                delivery.add_done_callback(_retrieve)
        self.sent.clear()
        return fenced

    def reset(self, retry_at: float) -> None:
        """Back to "not set up": nothing of the failed transaction is kept."""
        self.producer = None
        self.position = -1
        self.ready = False
        self.in_transaction = False
        self.dirty = False
        self.tally.clear()
        self.settle()
        self.retry_at = retry_at


class Lanes(dict[int, Lane]):
    """The lanes of the partitions assigned to this enforcer, by partition.

    ``lock`` is held for a whole commit window, and by the rebalance listener while it
    changes the lanes, so a partition is never revoked in the middle of a transaction.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = asyncio.Lock()
