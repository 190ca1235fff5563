"""Policy versions on the compacted policy topic: follow them, read the latest, publish
the next.

Each record is a ``c2bus.policy.set.v1`` event keyed by policy set id; every published
version also goes, in the same transaction, to ``<policy topic>.history``. Publishing is
optimistic and fenced: the publisher names the version it replaces; it takes the policy
set's own transactional id (which fences any other publisher of that set still in flight),
reads the version in force, checks the base, sends and commits, so of two publishers racing
at most one commits. Every enforcer also refuses, on receipt, a version whose base is not
the current one.

:class:`PolicyView` is what a long-running reader keeps instead of reading the topics from
their start per request: the newest version of every set and every version ever published,
followed as they are written (:func:`follow`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka.structs import TopicPartition

from c2bus.adapters.kafka import (
    kafka_step,
    new_consumer,
    new_producer,
    pause_refused,
    read_to_end,
    start_client,
    topic_partitions,
)
from c2bus.adapters.settings import KafkaSettings
from c2bus.core.cloudevents import KAFKA_HEADERS, new_event
from c2bus.core.codec import EventDecoder, encode_event
from c2bus.core.events import DirectiveEvent, PolicySetData, PolicySetEvent
from c2bus.core.labels import Classification
from c2bus.core.policy.compiler import compile_policy
from c2bus.core.policy.model import PolicyDocument
from c2bus.errors import InvalidEvent, KafkaError, KafkaRefused, PolicyError

log = logging.getLogger(__name__)
POLICY_EVENTS: EventDecoder[PolicySetEvent] = EventDecoder(PolicySetEvent)
DIRECTIVES: EventDecoder[DirectiveEvent] = EventDecoder(DirectiveEvent)


def history_topic(policy_topic: str) -> str:
    """Every published version, kept for good (the policy topic itself is compacted)."""
    return f"{policy_topic}.history"


class PolicyView:
    """The policy topics as a reader needs them: the newest valid version of every set, and
    every version ever published, oldest first."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.latest: dict[str, PolicySetEvent] = {}
        self.versions: dict[str, list[PolicySetEvent]] = {}

    def apply(self, topic: str, value: bytes | None) -> None:
        """One record of the policy topic or of its history (undecodable ones skipped)."""
        try:
            event = POLICY_EVENTS.decode_event(value or b"")
        except InvalidEvent:
            return  # the enforcers count and log these; a reader just skips them
        if topic == self.topic:
            self._in_force(event)
        else:
            self._published_once(event)

    def published(self, event: PolicySetEvent) -> None:
        """A version this process just published: readable here at once, before the
        follower reads it back (reading one's own writes)."""
        self._in_force(event)
        self._published_once(event)

    def _in_force(self, event: PolicySetEvent) -> None:
        set_id = event.data.policy_set_id
        current = self.latest.get(set_id)
        if current is None or event.data.version > current.data.version:
            self.latest[set_id] = event

    def _published_once(self, event: PolicySetEvent) -> None:
        known = self.versions.setdefault(event.data.policy_set_id, [])
        if all(v.id != event.id for v in known):
            known.append(event)


async def history(kafka: KafkaSettings, topic: str, policy_set_id: str) -> list[PolicySetEvent]:
    """Every version of ``policy_set_id`` ever published, oldest first."""
    view = PolicyView(topic)
    for record in await read_to_end(kafka, history_topic(topic)):
        view.apply(history_topic(topic), record.value)
    return view.versions.get(policy_set_id, [])


async def recorded_directives(kafka: KafkaSettings, topic: str, last: int) -> list[DirectiveEvent]:
    """The directives among the last ``last`` records of each partition of ``topic``,
    oldest first and at most ``last`` of them (approvals and bad records are skipped)."""
    directives = []
    for record in await read_to_end(kafka, topic, last=last):
        try:
            directives.append(DIRECTIVES.decode_event(record.value or b""))
        except InvalidEvent:
            continue
    directives.sort(key=lambda d: d.time)
    return directives[-last:]


class PolicyConflict(PolicyError):
    """The publisher's base version is not the current one (someone published first)."""


async def latest_versions(kafka: KafkaSettings, topic: str) -> dict[str, PolicySetEvent]:
    """The newest valid version of every policy set on the topic."""
    view = PolicyView(topic)
    for record in await read_to_end(kafka, topic):
        view.apply(topic, record.value)
    return view.latest


def policy_event(doc: PolicyDocument, replaces: int | None, source: str) -> PolicySetEvent:
    return new_event(
        PolicySetEvent,
        id=f"policy:{doc.policy_set_id}:v{doc.version}",
        source=source,
        time=datetime.now(UTC),
        classification=Classification.NATO_CONFIDENTIAL,
        releasableto="NATO",
        subject=doc.policy_set_id,
        data=PolicySetData(
            policy_set_id=doc.policy_set_id, version=doc.version, document=doc, replaces=replaces
        ),
    )


def publisher_id(topic: str, policy_set_id: str) -> str:
    """The transactional id every publisher of one policy set shares (one at a time)."""
    return f"{topic}.publisher.{policy_set_id}"


async def publish(
    kafka: KafkaSettings, topic: str, doc: PolicyDocument, replaces: int | None, source: str
) -> PolicySetEvent:
    """Validate and publish ``doc`` as the version after ``replaces``.

    Raises :class:`PolicyInvalid` (nothing published) or :class:`PolicyConflict` (someone
    else published first, or is publishing this set right now).
    """
    compile_policy(doc)  # every problem listed, before anything is sent
    producer = new_producer(
        kafka, "c2bus-policy-publisher", transactional_id=publisher_id(topic, doc.policy_set_id)
    )
    await start_client(producer, kafka)
    key = doc.policy_set_id.encode()
    try:
        with kafka_step("publish"):
            # Ours from here: an earlier publisher of this set still in flight is fenced (its
            # open transaction aborted), one that committed is visible to the read below.
            await producer.begin_transaction()
            current = (await latest_versions(kafka, topic)).get(doc.policy_set_id)
            _check_base(doc, replaces, current.data.version if current else None)
            event = policy_event(doc, replaces, source)
            value = encode_event(event)
            await producer.send(history_topic(topic), value, key=key, headers=KAFKA_HEADERS)
            await producer.send(topic, value, key=key, headers=KAFKA_HEADERS)
            await producer.commit_transaction()  # the history and the version, or neither
    except KafkaError as exc:
        # Fenced, or (when the fence lands between two steps) refused as an illegal
        # operation by a transaction the coordinator has already aborted: either way
        # another publisher of this set took over.
        if exc.fenced or exc.cause == "IllegalOperation":
            raise PolicyConflict(
                f"another publisher of {doc.policy_set_id} started meanwhile: re-read the "
                "version in force and name the version you replace"
            ) from exc
        raise KafkaError(f"publishing the policy failed: {exc}", cause=exc.cause) from exc
    finally:
        await producer.stop()
    log.info(
        "policy.published",
        extra={"policy_set_id": doc.policy_set_id, "version": doc.version, "replaces": replaces},
    )
    return event


def _check_base(doc: PolicyDocument, replaces: int | None, current: int | None) -> None:
    if replaces != current:
        now = "none is published" if current is None else f"it is {current}"
        raise PolicyConflict(
            f"stale base version {replaces} for {doc.policy_set_id}: {now}; "
            "re-read it and name the version you replace"
        )
    if current is not None and doc.version <= current:
        raise PolicyConflict(f"version {doc.version} is not newer than the current {current}")


async def follow(
    kafka: KafkaSettings,
    view: PolicyView,
    stop: asyncio.Event,
    caught_up: Callable[[], Any],
    client_id: str = "c2bus-policy-view",
) -> None:
    """Fold both policy topics into ``view`` from their start, call ``caught_up`` once at
    their end, then keep following until ``stop``."""
    topics = [view.topic, history_topic(view.topic)]
    consumer = new_consumer(kafka, client_id, group_id=None)
    await start_client(consumer, kafka)
    try:
        with kafka_step("follow policies"):
            tps: list[TopicPartition] = await topic_partitions(kafka, topics)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
        behind, refused = True, 0
        while not stop.is_set():
            try:
                with kafka_step("follow policies"):
                    batch = await consumer.getmany(timeout_ms=200)
                    for tp, records in batch.items():
                        for record in records:
                            view.apply(tp.topic, record.value)
                    if behind:
                        positions = [await consumer.position(tp) for tp in tps]
                        if all(p >= ends[tp] for p, tp in zip(positions, tps, strict=True)):
                            behind = False
                            caught_up()
            except KafkaRefused as exc:
                refused += 1
                await pause_refused("policy.follow", exc, refused, stop)
                continue
            refused = 0
    finally:
        await consumer.stop()
