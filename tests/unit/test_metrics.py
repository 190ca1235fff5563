"""The shared service metrics: consumer lag per partition, the directory the gateway's
hop latencies come from, and the Prometheus config ``c2bus up`` writes."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import msgspec
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from c2bus.adapters.metrics import ConsumerLag, EventFlow, directive_hops
from c2bus.core.codec import decode_event
from c2bus.core.events import DirectiveEvent, event_type
from c2bus.services.gateway.state import DirectiveDirectory
from c2bus.tools.prometheus import local_config
from tests.conftest import require_tool


class FakeConsumer:
    """What ConsumerLag reads of an AIOKafkaConsumer."""

    def __init__(
        self, ends: dict[TopicPartition, int | None], positions: dict[TopicPartition, int]
    ) -> None:
        self.ends = ends
        self.positions = positions

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_lag_is_end_less_position_per_partition_and_forgets_revoked_ones() -> None:
    registry = CollectorRegistry()
    lag = ConsumerLag(registry)
    a, b, c = (TopicPartition("c2.sa", p) for p in range(3))
    consumer: Any = FakeConsumer({a: 120, b: 7, c: None}, {a: 100, b: 7, c: 0})
    asyncio.run(lag.update(consumer))
    assert value(registry, "c2bus_consumer_lag_records", topic="c2.sa", partition="0") == 20
    assert value(registry, "c2bus_consumer_lag_records", topic="c2.sa", partition="1") == 0
    # no fetch response for partition 2 yet: no figure rather than a wrong one
    assert value(registry, "c2bus_consumer_lag_records", topic="c2.sa", partition="2") is None
    consumer.ends = {b: 9}
    asyncio.run(lag.update(consumer))
    assert value(registry, "c2bus_consumer_lag_records", topic="c2.sa", partition="0") is None
    assert value(registry, "c2bus_consumer_lag_records", topic="c2.sa", partition="1") == 2


def test_hops_and_flows_exist_before_the_first_observation() -> None:
    registry = CollectorRegistry()
    directive_hops(registry, ("delivered", "acknowledged"))
    flow = EventFlow(registry)
    assert value(registry, "c2bus_directive_hop_seconds_count", hop="delivered") == 0
    assert value(registry, "c2bus_directive_hop_seconds_count", hop="decided") is None
    flow.received("c2.sa", "c2bus.sa.track.v1", 3)
    flow.sent("console", "c2bus.sa.track.v1")
    track = "c2bus.sa.track.v1"
    assert value(registry, "c2bus_events_in_total", source="c2.sa", type=track) == 3
    assert value(registry, "c2bus_events_out_total", destination="console", type=track) == 1


def test_the_directory_times_the_first_delivery_from_the_approval(valid_example: Any) -> None:
    directive = decode_event(msgspec.json.encode(valid_example("directive")))
    assert isinstance(directive, DirectiveEvent)
    assert event_type(directive) == "c2bus.directive.v1"
    directory = DirectiveDirectory(capacity=1)
    directory.add(directive, approved_at=100.0)
    assert directory.delivered_at(directive.id) is None
    assert directory.first_delivery(directive.id, now=100.25) == 100.0
    assert directory.first_delivery(directive.id, now=101.0) is None  # a second console
    assert directory.delivered_at(directive.id) == 100.25
    assert directory.first_delivery("unknown", now=1.0) is None


def test_local_prometheus_config_points_at_the_ports_in_use(tmp_path: Path) -> None:
    ports = {
        "ingest": 18081, "enforcer": 18082, "policy_api": 18083,
        "gateway": 18765, "gateway_ops": 18766,
    }  # fmt: skip
    config = local_config("127.0.0.1", ports, 19090, scrape_interval_s=1)
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets == {
        "c2bus-ingest": ["127.0.0.1:18081"],
        "c2bus-enforcer": ["127.0.0.1:18082"],
        "c2bus-policy-api": ["127.0.0.1:18083"],
        "c2bus-gateway": ["127.0.0.1:18766"],  # its ops listener, not the console port
        "prometheus": ["127.0.0.1:19090"],
    }
    assert config["global"]["scrape_interval"] == "1000ms"
    assert all(Path(pattern).is_absolute() for pattern in config["rule_files"])
    path = tmp_path / "prometheus.yml"
    path.write_bytes(msgspec.yaml.encode(config))
    checked = subprocess.run(
        [require_tool("promtool"), "check", "config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout
