"""Interoperability with a non-Python Kafka client (kcat, on librdkafka): it sees every
c2bus topic, and a CloudEvent it publishes decodes with our contracts."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import decode_event
from c2bus.core.events import TrackEvent
from tests.integration.test_roundtrip import consume

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (apt-get install kcat)")


def kcat(*args: str, stdin: str | None = None) -> str:
    assert KCAT is not None
    result = subprocess.run(
        [KCAT, *args], input=stdin, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def test_kcat_lists_every_topic(kafka_bootstrap: str, topics: TopicNames) -> None:
    listing = kcat("-b", kafka_bootstrap, "-L", "-J")
    names = {t["topic"] for t in json.loads(listing)["topics"]}
    assert set(topics.all()) <= names


async def test_event_published_by_kcat_decodes(
    kafka_bootstrap: str, topics: TopicNames, group_id: str, valid_example: Any
) -> None:
    doc = valid_example("sa-track")
    kcat(
        "-b",
        kafka_bootstrap,
        "-P",
        "-t",
        topics.sa,
        "-K",
        "\t",
        stdin=f"TRK-4711\t{json.dumps(doc)}\n",
    )
    [record] = await consume(kafka_bootstrap, topics.sa, 1, group_id)
    assert record.key == b"TRK-4711"
    event = decode_event(record.value)
    assert isinstance(event, TrackEvent)
    assert event.data.track_id == "TRK-4711"
