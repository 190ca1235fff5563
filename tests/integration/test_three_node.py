"""Three local brokers, replication 3, min.insync.replicas 2: acks=all writes go on with a
broker killed by SIGKILL, nothing is lost, and the broker rejoins on the next start."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from c2bus.adapters.kafka import client_options, probe
from c2bus.adapters.settings import KafkaSettings
from c2bus.adapters.topics import TopicNames, create_topics
from c2bus.tools.localkafka import LocalCluster
from tests.integration.conftest import local_settings
from tests.integration.test_roundtrip import consume
from tests.integration.test_topics import topic_configs
from tests.unit.test_cli import run

pytestmark = pytest.mark.cluster
PORT = "23092"  # below the ephemeral range (32768+), where client sockets live


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, dict[str, str]]]:
    env = {"C2BUS_HOME": str(tmp_path), "C2BUS_KAFKA_PORT": PORT}
    three = LocalCluster(local_settings(**env), nodes=3)
    yield three, env
    three.stop()
    assert all(three.pids(i) == [] for i in three.node_ids())


async def produce(kafka: KafkaSettings, topic: str, start: int, count: int) -> None:
    producer = AIOKafkaProducer(
        **client_options(replace(kafka, request_timeout_ms=20_000)),
        acks="all",
        enable_idempotence=True,
    )
    await producer.start()
    try:
        sends = [
            await producer.send(topic, f"m-{i}".encode(), key=f"unit-{i % 7}".encode())
            for i in range(start, start + count)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def test_acks_all_survives_one_broker_killed(cluster: tuple[LocalCluster, dict[str, str]]) -> None:
    three, env = cluster
    started = run("kafka", "start", "--nodes", "3", env=env)
    assert started.returncode == 0, started.stderr
    assert "ready: 3 brokers" in started.stderr
    bootstrap = three.client()

    prefix = "fault"
    outcomes = asyncio.run(create_topics(bootstrap, prefix))
    assert {o.replication for o in outcomes} == {3}
    names = TopicNames(prefix)
    configs = asyncio.run(topic_configs(bootstrap, [names.submitted]))
    assert configs[names.submitted]["min.insync.replicas"] == "2"

    asyncio.run(produce(bootstrap, names.submitted, 0, 100))
    [killed] = three.kill_node(2)
    assert three.pids(2) == []

    asyncio.run(produce(bootstrap, names.submitted, 100, 100))  # raises if acks=all fails

    records = asyncio.run(
        consume(bootstrap, names.submitted, 200, "fault-check", isolation_level="read_committed")
    )
    values = sorted(r.value.decode() for r in records)
    assert values == sorted(f"m-{i}" for i in range(200))  # none lost, none twice

    degraded = run("kafka", "status", env=env)
    assert degraded.returncode == 1
    assert "NOT RUNNING" in degraded.stdout

    restarted = run("kafka", "start", "--nodes", "3", env=env)
    assert restarted.returncode == 0, restarted.stderr
    assert "node 2" in restarted.stderr
    assert three.pids(2) and three.pids(2) != [killed]
    assert len(asyncio.run(probe(bootstrap)).broker_ids) == 3
