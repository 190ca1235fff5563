"""Policy versions on the compacted policy topic: read the latest, publish the next.

Each record is a ``c2bus.policy.set.v1`` event keyed by policy set id; every published
version also goes, in the same transaction, to ``<policy topic>.history``. Publishing is
optimistic: the publisher names the version it replaces, and both the publisher (before
sending) and every enforcer (on receipt) refuse a version whose base is not the current one,
so two publishers racing cannot both win.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from aiokafka.errors import KafkaError as AioKafkaError

from c2bus.adapters.kafka import new_producer, read_to_end, start_client
from c2bus.core.codec import EventDecoder, encode_event
from c2bus.core.events import DirectiveEvent, PolicySetData, PolicySetEvent
from c2bus.core.labels import Classification
from c2bus.core.policy.compiler import compile_policy
from c2bus.core.policy.model import PolicyDocument
from c2bus.errors import InvalidEvent, KafkaError, PolicyError

log = logging.getLogger(__name__)
POLICY_EVENTS: EventDecoder[PolicySetEvent] = EventDecoder(PolicySetEvent)
DIRECTIVES: EventDecoder[DirectiveEvent] = EventDecoder(DirectiveEvent)


def history_topic(policy_topic: str) -> str:
    """Every published version, kept for good (the policy topic itself is compacted)."""
    return f"{policy_topic}.history"


async def history(bootstrap: str, topic: str, policy_set_id: str) -> list[PolicySetEvent]:
    """Every version of ``policy_set_id`` ever published, oldest first."""
    versions = []
    for record in await read_to_end(bootstrap, history_topic(topic)):
        try:
            event = POLICY_EVENTS.decode_event(record.value or b"")
        except InvalidEvent:
            continue
        if event.data.policy_set_id == policy_set_id:
            versions.append(event)
    return versions


async def recorded_directives(bootstrap: str, topic: str, last: int) -> list[DirectiveEvent]:
    """The directives among the last ``last`` records of each partition of ``topic``,
    oldest first and at most ``last`` of them (approvals and bad records are skipped)."""
    directives = []
    for record in await read_to_end(bootstrap, topic, last=last):
        try:
            directives.append(DIRECTIVES.decode_event(record.value or b""))
        except InvalidEvent:
            continue
    directives.sort(key=lambda d: d.time)
    return directives[-last:]


class PolicyConflict(PolicyError):
    """The publisher's base version is not the current one (someone published first)."""


async def latest_versions(bootstrap: str, topic: str) -> dict[str, PolicySetEvent]:
    """The newest valid version of every policy set on the topic."""
    latest: dict[str, PolicySetEvent] = {}
    for record in await read_to_end(bootstrap, topic):
        try:
            event = POLICY_EVENTS.decode_event(record.value or b"")
        except InvalidEvent:
            continue  # the enforcers count and log these; the store just skips them
        current = latest.get(event.data.policy_set_id)
        if current is None or event.data.version > current.data.version:
            latest[event.data.policy_set_id] = event
    return latest


def policy_event(doc: PolicyDocument, replaces: int | None, source: str) -> PolicySetEvent:
    return PolicySetEvent(
        specversion="1.0",
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


async def publish(
    bootstrap: str, topic: str, doc: PolicyDocument, replaces: int | None, source: str
) -> PolicySetEvent:
    """Validate and publish ``doc`` as the version after ``replaces``.

    Raises :class:`PolicyInvalid` (nothing published) or :class:`PolicyConflict`.
    """
    compile_policy(doc)  # every problem listed, before anything is sent
    current = (await latest_versions(bootstrap, topic)).get(doc.policy_set_id)
    current_version = current.data.version if current else None
    if replaces != current_version:
        now = "none is published" if current_version is None else f"it is {current_version}"
        raise PolicyConflict(
            f"stale base version {replaces} for {doc.policy_set_id}: {now}; "
            "re-read it and name the version you replace"
        )
    if current_version is not None and doc.version <= current_version:
        raise PolicyConflict(
            f"version {doc.version} is not newer than the current {current_version}"
        )
    event = policy_event(doc, replaces, source)
    producer = new_producer(
        bootstrap, "c2bus-policy-publisher", transactional_id=f"c2bus-policy-{uuid.uuid4()}"
    )
    await start_client(producer, bootstrap)
    value, key = encode_event(event), doc.policy_set_id.encode()
    try:
        async with producer.transaction():  # the history and the version in force, or neither
            await producer.send(history_topic(topic), value, key=key)
            await producer.send(topic, value, key=key)
    except AioKafkaError as exc:
        raise KafkaError(f"publishing the policy failed: {exc}") from exc
    finally:
        await producer.stop()
    log.info(
        "policy.published",
        extra={"policy_set_id": doc.policy_set_id, "version": doc.version, "replaces": replaces},
    )
    return event
