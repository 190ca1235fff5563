"""A real Kafka for the integration tests, started through the project's own tooling.

The broker is secured as every local broker is (TLS, SCRAM, ACLs): the tests' clients
authenticate as the admin, their services each as its own principal. With
``C2BUS_KAFKA_BOOTSTRAP`` set the tests use that cluster instead (its admin credentials from
the ``C2BUS_KAFKA_*`` variables). Otherwise the session
starts a fresh single local node under ``.c2bus/test`` on ``C2BUS_TEST_KAFKA_PORT`` (default
19092, so a broker from ``make run`` on 9092 is left alone) and stops it at the end, unless
``C2BUS_TEST_KEEP_KAFKA=1`` (a kept broker is reused by the next session). Every test
gets its own topic prefix and consumer group.
"""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from c2bus.adapters.acls import grant
from c2bus.adapters.kafka import probe
from c2bus.adapters.settings import KafkaSettings, LocalKafkaSettings, project_root
from c2bus.adapters.topics import TopicNames, create_topics
from c2bus.tools.localkafka import LocalCluster
from tests.integration.services import Env

TEST_PORT = os.environ.get("C2BUS_TEST_KAFKA_PORT", "19092")


def local_settings(**overrides: str) -> LocalKafkaSettings:
    env = {
        "C2BUS_HOME": str(project_root() / ".c2bus" / "test"),
        "C2BUS_KAFKA_PORT": TEST_PORT,
        **{k: v for k, v in os.environ.items() if k == "C2BUS_KAFKA_JARS_DIR"},
        **overrides,
    }
    return LocalKafkaSettings.from_env(env)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect after each test, so that a connection a test left open is reported against
    that test, not against whichever test runs when the collector next comes by."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaSettings]:
    """The secured cluster, as its admin sees it."""
    if os.environ.get("C2BUS_KAFKA_BOOTSTRAP", "").strip():
        external = KafkaSettings.from_env(principal="admin")
        asyncio.run(probe(external, 15))
        yield external
        return
    cluster = LocalCluster(local_settings(), nodes=1)
    if not cluster.status(1).running:
        cluster.reset()  # a fresh broker per session: no topics left from earlier runs
    cluster.start(progress=lambda m: print(f"[kafka] {m}"))
    try:
        yield cluster.client()
    finally:
        if os.environ.get("C2BUS_TEST_KEEP_KAFKA") != "1":
            cluster.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka: KafkaSettings) -> str:
    return kafka.bootstrap


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def group_id(prefix: str) -> str:
    return f"{prefix}-group"


@pytest.fixture
async def topics(kafka: KafkaSettings, prefix: str) -> AsyncIterator[TopicNames]:
    """The full set of c2bus topics under this test's own prefix, with the ACL file's grants
    for it."""
    await create_topics(kafka, prefix)
    await grant(kafka, prefix)
    yield TopicNames(prefix)


@pytest.fixture
def env(kafka: KafkaSettings, prefix: str, topics: TopicNames, tmp_path: Path) -> Env:
    """This test's topics, a signing key and the settings its services run with."""
    return Env.create(kafka, prefix, tmp_path)
