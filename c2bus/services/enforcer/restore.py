"""Setting a lane up from Kafka: its committed input offset, its held state read from the
mark committed with it, and the head of its decisions partition's audit chain.

Every transaction of a lane commits, with its input offset, the held topic's *restore mark*
for that partition (:meth:`c2bus.core.held.HeldDirectives.mark`) as the offset's metadata
(``{"held_from": <offset>}``). No record before the mark is in force, so a lane is set up by
reading the held partition from the mark to its end: a read bounded by the live state, not
by the partition's history. An offset committed without a mark (by an older enforcer, or
none at all) restores from the beginning, as before.

The audit chain (:mod:`c2bus.core.audit`) continues from the newest record of the lane's
decisions partition whose signature verifies: the tail is read, a little at first and more
only if no record there verifies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka.structs import OffsetAndMetadata, TopicPartition

from c2bus.adapters.kafka import Reading, admin_client, kafka_step, read_topic
from c2bus.adapters.settings import KafkaSettings
from c2bus.core.audit import START, Check, Head, head_of

log = logging.getLogger(__name__)

MARK_FIELD = "held_from"


def with_mark(position: int, mark: int) -> OffsetAndMetadata:
    """The input offset to commit, carrying the held partition's restore mark."""
    return OffsetAndMetadata(position, json.dumps({MARK_FIELD: mark}, separators=(",", ":")))


def mark_of(metadata: str) -> int | None:
    """The restore mark in a committed offset's metadata; None (read from the beginning)
    when there is none or it is not ours."""
    if not metadata:
        return None
    try:
        mark = json.loads(metadata).get(MARK_FIELD)
    except (ValueError, AttributeError):
        mark = None
    if not isinstance(mark, int) or isinstance(mark, bool) or mark < 0:
        log.warning("enforcer.mark_unreadable", extra={"metadata": metadata[:200]})
        return None
    return mark


@dataclass(frozen=True, slots=True)
class Committed:
    """What the group committed for one input partition."""

    offset: int
    #: where the held partition's restore may start, if the commit says
    mark: int | None


async def committed(
    kafka: KafkaSettings, group_id: str, tps: list[TopicPartition]
) -> dict[int, Committed]:
    """The committed offsets (and marks) of ``tps`` in ``group_id``, by partition; a
    partition with no committed offset is left out."""
    with kafka_step("committed offsets"):
        async with admin_client(kafka) as admin:
            found = await admin.list_consumer_group_offsets(group_id, partitions=tps)
    return {
        tp.partition: Committed(entry.offset, mark_of(entry.metadata))
        for tp, entry in found.items()
        if tp in tps and entry.offset >= 0
    }


async def read_held(
    kafka: KafkaSettings, topic: str, partitions: list[int], marks: Mapping[int, int]
) -> Reading:
    """The held state's records of ``partitions``, each from its mark (or beginning)."""
    with kafka_step("read held state"):
        return await read_topic(kafka, topic, partitions, starts=marks)


#: how many of a decisions partition's last offsets are read first for its chain head
TAIL = 64


async def read_heads(
    kafka: KafkaSettings, topic: str, partitions: list[int], check: Check
) -> dict[int, Head]:
    """The audit chain head of each decisions partition: its newest record whose signature
    ``check`` verifies (:data:`~c2bus.core.audit.START` for a partition with none)."""
    heads: dict[int, Head] = {}
    wanted, last = list(partitions), TAIL
    while wanted:
        with kafka_step("read decisions tail"):
            reading = await read_topic(kafka, topic, wanted, last=last)
        by_partition: dict[int, list[object]] = {p: [] for p in wanted}
        for record in reading.records:
            by_partition[record.partition].append(record)
        short = []
        for partition, records in by_partition.items():
            head = head_of(records, check)
            if head is not None:
                heads[partition] = head
            elif last >= reading.ends.get(partition, 0):  # all of it read: none verifies
                heads[partition] = START
            else:
                short.append(partition)
        for partition in short:
            log.warning(
                "enforcer.chain_tail_unverified",
                extra={"partition": partition, "records": last},
            )
        wanted, last = short, last * 16
    return heads
