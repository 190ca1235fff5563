"""Every Kafka client the adapters build honours the configured request timeout."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from c2bus.adapters import kafka
from c2bus.adapters.settings import KafkaSettings
from c2bus.services.enforcer.lanes import Lane

SETTINGS = KafkaSettings.from_env(
    {"C2BUS_KAFKA_BOOTSTRAP": "k1:9092", "C2BUS_KAFKA_REQUEST_TIMEOUT_MS": "4321"}
)


class Recorder:
    """Stands in for an aiokafka client class: records what it was built with."""

    def __init__(self) -> None:
        self.built: list[dict[str, Any]] = []

    def __call__(self, *topics: str, **config: Any) -> Recorder:
        self.built.append(config)
        return self


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> dict[str, Recorder]:
    recorders = {name: Recorder() for name in ("AIOKafkaProducer", "AIOKafkaConsumer")}
    for name, recorder in recorders.items():
        monkeypatch.setattr(kafka, name, recorder)
    return recorders


def test_the_settings_timeout_reaches_producers_and_consumers(
    clients: dict[str, Recorder],
) -> None:
    kafka.new_producer(SETTINGS, "p")
    kafka.new_consumer(SETTINGS, "c", group_id=None)
    for recorder in clients.values():
        (config,) = recorder.built
        assert config["bootstrap_servers"] == "k1:9092"
        assert config["request_timeout_ms"] == 4321


def test_a_caller_may_shorten_the_timeout_but_never_lengthen_it(
    clients: dict[str, Recorder],
) -> None:
    kafka.new_producer(SETTINGS, "p", request_timeout_ms=1000)
    kafka.new_producer(SETTINGS, "p", request_timeout_ms=60_000)
    shorter, longer = clients["AIOKafkaProducer"].built
    assert shorter["request_timeout_ms"] == 1000
    assert longer["request_timeout_ms"] == 4321


async def test_a_lane_times_requests_out_within_its_commit(
    clients: dict[str, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    roomy = dataclasses.replace(SETTINGS, request_timeout_ms=30_000)

    class Started(Exception):
        pass

    def stop_at_start(self: Recorder) -> None:
        raise Started

    monkeypatch.setattr(Recorder, "start", stop_at_start, raising=False)
    for settings, commit_s, expected in ((roomy, 15, 10_000), (SETTINGS, 15, 4321)):
        with pytest.raises(Started):
            await Lane(0).start(settings, "e", "g.p0", commit_s)
        assert clients["AIOKafkaProducer"].built[-1]["request_timeout_ms"] == expected
