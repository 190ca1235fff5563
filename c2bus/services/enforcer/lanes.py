"""One lane per input partition: the unit of ownership, of transactions and of recovery.

A lane owns a transactional producer whose id names the input partition
(``<group>.p<partition>``), not the process. Whoever is assigned partition *i* starts that
producer, and starting it fences every earlier holder of the id and completes (commits or
aborts) any transaction it left open, before this owner reads the committed offset and the
held state. That is what keeps a paused or partitioned enforcer (a zombie) from committing
anything once another has taken its partition, even though aiokafka's transactional offset
commits carry only the group id (no generation to fence on). See ``docs/exactly-once.md``.

A lane writes what the decision core returns (:class:`~c2bus.core.enforcement.Step`) in its
open transaction; every Kafka step here raises :class:`~c2bus.errors.KafkaError` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from c2bus.adapters.dlq import DeadLetters
from c2bus.adapters.kafka import is_fencing, kafka_step, new_producer, uncut
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.settings import KafkaSettings
from c2bus.adapters.signing import APPROVED, CHECKPOINTS, DECISIONS, STATUS, Signer
from c2bus.core.audit import Check
from c2bus.core.cloudevents import KAFKA_HEADERS
from c2bus.core.enforcement import Step, Stream, Write
from c2bus.core.held import HeldDirectives
from c2bus.services.enforcer.metrics import Tally

log = logging.getLogger(__name__)


def _retrieve(delivery: asyncio.Future[Any]) -> None:
    """Mark a delivery's error as seen: the transaction's outcome already reports it."""
    if not delivery.cancelled():
        delivery.exception()


def _locate(
    held: HeldDirectives, partition: int, key: bytes, generation: int
) -> Callable[[asyncio.Future[Any]], None]:
    """Tell the held state where a record of it landed, once Kafka has it."""

    def located(delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and delivery.exception() is None:
            held.located(partition, key.decode(), delivery.result().offset, generation)

    return located


@dataclass(frozen=True, slots=True)
class Outputs:
    """The topics a lane writes to, by the core's streams, the dead letters, and the held
    state told where its records land (the restore mark follows them)."""

    topics: dict[Stream, str]
    dlq: DeadLetters
    held: HeldDirectives
    #: signs every decision, approved directive, DECIDED step and checkpoint (None:
    #: unsigned, for benchmarks only)
    signer: Signer | None
    #: checks a decision's signature, when the audit chain's head is read back
    trusted: Check

    def topic(self, stream: Stream) -> str:
        return self.topics[stream]

    def headers(self, writes: Sequence[Write]) -> list[list[tuple[str, bytes]] | None]:
        """The headers of each of ``writes`` (the records of one or more steps): events in
        CloudEvents structured mode; the decisions, approved directives, DECIDED steps and
        checkpoints among them signed together as one record tree (one signature); held-state
        records are not events and carry none."""
        out = [None if w.kind is None else list(KAFKA_HEADERS) for w in writes]
        signed = [
            (i, SIGNED[w.stream]) for i, w in enumerate(writes) if w.kind and w.stream in SIGNED
        ]
        if self.signer is None or not signed:
            return out
        tree = self.signer.tree_headers([(f, writes[i].value or b"") for i, f in signed])
        for (i, _), own in zip(signed, tree, strict=True):
            out[i] = [*KAFKA_HEADERS, *own]
        return out


#: A lane's producer batches (per topic partition) hold this many bytes at most (half the
#: broker's default message.max.bytes): a window's records for a partition go in few
#: requests (aiokafka's default, 16 KiB, holds a handful of signed decisions).
LANE_BATCH_BYTES = 512 * 1024

#: The streams whose records the enforcer signs, with their record family.
SIGNED = {
    Stream.DECISIONS: DECISIONS,
    Stream.APPROVED: APPROVED,
    Stream.STATUS: STATUS,
    Stream.CHECKPOINTS: CHECKPOINTS,
}


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
    #: the held-topic restore mark committed last (-1: none since set-up), and the one the
    #: commit under way carries
    committed_mark: int = -1
    committing_mark: int = -1

    def settle(self) -> bool:
        """Forget the deliveries (their errors are retrieved); True if any was fenced."""
        fenced = False
        for delivery in self.sent:
            if delivery.done():
                with contextlib.suppress(asyncio.CancelledError):
                    fenced |= is_fencing(delivery.exception())
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
        self.committed_mark = self.committing_mark = -1

    # -- Kafka steps ---------------------------------------------------------------------------

    async def start(
        self, kafka: KafkaSettings, client_id: str, transactional_id: str, timeout_s: float
    ) -> None:
        """Start the lane's transactional producer and open its first transaction. Its id
        names the partition, so this fences any earlier owner and ends its open transaction
        before we read offsets."""
        self.producer = new_producer(
            kafka,
            client_id,
            transactional_id=transactional_id,
            # A request must time out (and be retried) within the commit that waits for it.
            request_timeout_ms=int(timeout_s * 1000 * 2 / 3),
            # The commit waits for batches still lingering, so lingering only adds latency;
            # under load batches fill while earlier requests are in flight.
            linger_ms=0,
            # A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS until
            # the markers are written (KAFKA-5477); the default 100 ms backoff would add
            # that much to every commit.
            retry_backoff_ms=10,
            transaction_timeout_ms=max(30_000, int(2_000 * timeout_s)),
            max_batch_size=LANE_BATCH_BYTES,
        )  # from here on, failing the lane closes it
        with kafka_step("init"):
            async with asyncio.timeout(timeout_s):
                await uncut(self.producer.start(), self.producer.stop)
                await self.producer.begin_transaction()  # returns once the id is ours
        self.in_transaction = True

    async def write(
        self, steps: Sequence[tuple[Step, Any]], producer: AIOKafkaProducer, outputs: Outputs
    ) -> None:
        """Write the records of ``steps`` (each with its input record, or None) and their
        dead letters in the open transaction, under one signature."""
        await self.touch()
        generation = outputs.held.generation(self.partition)
        writes = [write for step, _ in steps for write in step.writes]
        headers = iter(outputs.headers(writes))
        with kafka_step("send"):
            for step, record in steps:
                for write in step.writes:
                    delivery = await producer.send(
                        outputs.topic(write.stream),
                        write.value,
                        key=write.key,
                        partition=write.partition,
                        headers=next(headers),
                    )
                    if write.stream is Stream.HELD:
                        delivery.add_done_callback(
                            _locate(outputs.held, self.partition, write.key, generation)
                        )
                    self.sent.append(delivery)
                if step.dead_letter is not None:
                    stage, error = step.dead_letter.stage, step.dead_letter.error
                    self.sent.append(await outputs.dlq.send(record, stage, error, producer))
                self.tally.add(step, outputs.topic)

    async def touch(self) -> None:
        """Open a transaction if none is (exactly once) and have the window commit it."""
        if self.producer is not None and not self.in_transaction:
            with kafka_step("begin"):
                await self.producer.begin_transaction()
            self.in_transaction = True
        self.dirty = True

    async def commit(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], group_id: str, timeout_s: float
    ) -> None:
        """Commit the open transaction with the lane's input offset (and its metadata)."""
        producer = self.producer
        assert producer is not None
        with kafka_step("commit"):
            async with asyncio.timeout(timeout_s):
                await producer.send_offsets_to_transaction(offsets, group_id)
                await producer.commit_transaction()
        self.in_transaction = False

    async def close(self, timeout_s: float) -> None:
        """Abort what is open and stop the producer; errors are the lane's past, not ours."""
        producer, self.producer = self.producer, None
        if producer is None:
            return
        if self.in_transaction and self.dirty:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await producer.abort_transaction()
        with contextlib.suppress(Exception):
            await bounded(f"lane {self.partition} producer.stop", producer.stop(), timeout_s)


class Lanes(dict[int, Lane]):
    """The lanes of the partitions assigned to this enforcer, by partition.

    ``lock`` is held for a whole commit window, and by the rebalance listener while it
    changes the lanes, so a partition is never revoked in the middle of a transaction.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = asyncio.Lock()
