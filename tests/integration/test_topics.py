"""`c2bus topics create` makes every DESIGN §3 topic with its layout, idempotently."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from c2bus.adapters.kafka import client_options, probe
from c2bus.adapters.settings import KafkaSettings
from c2bus.adapters.topics import TOPICS, TopicNames, create_topics


async def topic_configs(kafka: KafkaSettings, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            _, _, _, name, entries = resource[:5]
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return configs


async def test_creates_every_topic_with_its_layout_then_is_idempotent(
    kafka: KafkaSettings, prefix: str
) -> None:
    first = await create_topics(kafka, prefix)
    names = TopicNames(prefix)
    assert {o.name for o in first} == set(names.all())
    assert all(o.created for o in first)
    by_name = {o.name: o for o in first}
    for spec in TOPICS:
        assert by_name[spec.name(prefix)].partitions == spec.partitions

    info = await probe(kafka)
    assert set(names.all()) <= info.topics

    configs = await topic_configs(kafka, list(names.all()))
    assert configs[names.policy]["cleanup.policy"] == "compact"
    assert configs[names.decisions]["retention.ms"] == "-1"
    assert configs[names.sa]["cleanup.policy"] == "delete"
    expected_isr = "2" if len(info.broker_ids) >= 3 else "1"
    assert {c["min.insync.replicas"] for c in configs.values()} == {expected_isr}

    second = await create_topics(kafka, prefix)
    assert not any(o.created for o in second)
    assert [(o.name, o.partitions) for o in second] == [(o.name, o.partitions) for o in first]
