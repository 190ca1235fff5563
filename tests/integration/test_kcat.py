"""Interoperability with a non-Python Kafka client (kcat, on librdkafka), configured with what
`c2bus kafka client-config` prints: it sees every c2bus topic, a CloudEvent it publishes
decodes with our contracts, and the operators' reader reads the decisions.

Debian's kcat is built on librdkafka 2.0, whose SCRAM exchange Kafka 4 refuses (fixed in
librdkafka 2.6.1), so kcat connects with a client certificate, on the MTLS listener.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from c2bus.adapters.kafka import new_producer, start_client
from c2bus.adapters.settings import KafkaSettings
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import decode_event
from c2bus.core.events import TrackEvent
from tests.integration.test_roundtrip import consume
from tests.unit.test_cli import run

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (apt-get install kcat)")


def kcat(
    *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    assert KCAT is not None
    return subprocess.run(
        [KCAT, *args], input=stdin, capture_output=True, text=True, timeout=60, check=check
    )


def client_config(principal: str, tmp_path: Path, test_env: dict[str, str]) -> str:
    """What `c2bus kafka client-config --mtls` prints for ``principal``, as a file."""
    printed = run("kafka", "client-config", "--principal", principal, "--mtls", env=test_env)
    assert printed.returncode == 0, printed.stderr
    assert "security.protocol=SSL" in printed.stdout
    path = tmp_path / f"{principal}.conf"
    path.write_text(printed.stdout)
    return str(path)


@pytest.fixture
def test_env() -> dict[str, str]:
    """The environment of the test broker (its home and port), for the CLI."""
    from tests.integration.conftest import TEST_PORT, local_settings  # noqa: PLC0415

    return {"C2BUS_HOME": str(local_settings().home), "C2BUS_KAFKA_PORT": TEST_PORT}


def test_kcat_lists_every_topic(
    topics: TopicNames, tmp_path: Path, test_env: dict[str, str]
) -> None:
    listing = kcat("-F", client_config("admin", tmp_path, test_env), "-L", "-J").stdout
    names = {t["topic"] for t in json.loads(listing)["topics"]}
    assert set(topics.all()) <= names


async def test_event_published_by_kcat_decodes(
    kafka: KafkaSettings,
    topics: TopicNames,
    group_id: str,
    valid_example: Any,
    tmp_path: Path,
    test_env: dict[str, str],
) -> None:
    doc = valid_example("sa-track")
    config = client_config("admin", tmp_path, test_env)
    kcat("-F", config, "-P", "-t", topics.sa, "-K", "\t", stdin=f"TRK-4711\t{json.dumps(doc)}\n")
    [record] = await consume(kafka, topics.sa, 1, group_id)
    assert record.key == b"TRK-4711"
    event = decode_event(record.value)
    assert isinstance(event, TrackEvent)
    assert event.data.track_id == "TRK-4711"


async def test_the_reader_reads_decisions_and_writes_nothing(
    kafka: KafkaSettings, topics: TopicNames, tmp_path: Path, test_env: dict[str, str]
) -> None:
    producer = new_producer(kafka, "kcat-test")
    await start_client(producer, kafka)
    try:
        await producer.send_and_wait(topics.decisions, b'{"a": "decision"}', key=b"d-1")
    finally:
        await producer.stop()
    config = client_config("reader", tmp_path, test_env)
    read = kcat("-F", config, "-C", "-t", topics.decisions, "-o", "beginning", "-c", "1", "-e")
    assert read.stdout.strip() == '{"a": "decision"}'
    refused = kcat("-F", config, "-P", "-t", topics.decisions, stdin="forged\n", check=False)
    assert refused.returncode != 0
    assert "authoriz" in refused.stderr.lower()
