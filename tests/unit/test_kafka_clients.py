"""Every Kafka client the adapters build honours the configured request timeout; a step
Kafka refuses comes out as a counted KafkaRefused."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from aiokafka.protocol.admin import ApiVersionResponse_v0
from prometheus_client import CollectorRegistry

from c2bus.adapters import kafka
from c2bus.adapters.metrics import export_kafka_refusals
from c2bus.adapters.settings import KafkaSettings
from c2bus.errors import KafkaError, KafkaRefused
from c2bus.services.enforcer.lanes import Lane
from c2bus.tools.localkafka.secrets import LocalSecrets

SETTINGS = KafkaSettings.from_env(
    {
        "C2BUS_KAFKA_BOOTSTRAP": "k1:9092",
        "C2BUS_KAFKA_REQUEST_TIMEOUT_MS": "4321",
        "C2BUS_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
    }
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


def test_clients_authenticate_with_scram_over_tls_by_default(
    clients: dict[str, Recorder], tmp_path: Path
) -> None:
    LocalSecrets(tmp_path).ensure(["gateway"])
    env = {"C2BUS_KAFKA_BOOTSTRAP": "k1:9093", "C2BUS_KAFKA_SECRETS_DIR": str(tmp_path)}
    settings = KafkaSettings.from_env(env, principal="gateway")
    password = (tmp_path / "gateway.password").read_text()
    assert password not in repr(settings)  # the password is read when a client is built
    kafka.new_consumer(settings, "c", group_id=None)
    (config,) = clients["AIOKafkaConsumer"].built
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "gateway"
    assert config["sasl_plain_password"] == password
    context = config["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert kafka.librdkafka_config(settings)["ssl.ca.location"] == str(tmp_path / "ca.crt")


def test_plaintext_is_an_explicit_choice_and_is_warned_about(
    clients: dict[str, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    plain = dataclasses.replace(SETTINGS, bootstrap="k2:9092")
    kafka.new_producer(plain, "p")
    (config,) = clients["AIOKafkaProducer"].built
    assert config["security_protocol"] == "PLAINTEXT" and "ssl_context" not in config
    assert [r.message for r in caplog.records] == ["kafka.plaintext"]


def test_a_refusal_is_a_counted_kafka_refused_that_tells_the_caller_nothing_internal() -> None:
    registry = CollectorRegistry()
    export_kafka_refusals(registry)

    def count(error: str) -> float:
        value = registry.get_sample_value("c2bus_kafka_refusals_total", {"error": error})
        assert value is not None  # every known refusal is exported from the start
        return value

    before = count("TopicAuthorizationFailedError")
    with pytest.raises(KafkaRefused) as refused, kafka.kafka_step("produce"):
        raise TopicAuthorizationFailedError("c2.decisions")
    assert refused.value.cause == "TopicAuthorizationFailedError" and refused.value.retriable
    assert "acls show" in str(refused.value)  # the operator's fix, in the log
    told = refused.value.for_caller("the events")
    assert (
        told == "Kafka refused the service (TopicAuthorizationFailedError); operators: see its log"
    )
    assert count("TopicAuthorizationFailedError") == before + 1

    unavailable = count("SaslAuthenticationFailed")
    with pytest.raises(KafkaError) as failed, kafka.kafka_step("produce"):
        raise KafkaConnectionError("broker gone")
    assert not isinstance(failed.value, KafkaRefused)  # not a refusal: not counted as one
    assert failed.value.for_caller("the events") == (
        "Kafka did not accept the events: KafkaConnectionError"
    )
    assert count("SaslAuthenticationFailed") == unavailable
    assert sum(kafka.REFUSALS.values()) == sum(
        s.value for m in registry.collect() for s in m.samples if m.name == "c2bus_kafka_refusals"
    )


async def test_a_client_whose_start_is_cancelled_is_stopped_and_holds_no_connection() -> None:
    """A replay cancelled while its consumer connects (the console left) must not leave the
    half-started client behind: aiokafka warns of it when collected, and it holds sockets."""

    class Slow:
        stopped = False

        started = False

        async def start(self) -> None:
            await asyncio.sleep(0.05)
            self.started = True

        async def stop(self) -> None:
            self.stopped = True

    client = Slow()
    task = asyncio.create_task(kafka.start_client(client, SETTINGS))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # its start was let finish, not cut off mid-connect, and then it was stopped
    assert client.started and client.stopped


class StallingBroker:
    """Answers a client's version lookup, then never answers again: a broker that stalls
    while a client bootstraps (the metadata request in flight). Counts open connections."""

    def __init__(self) -> None:
        self.open = 0
        self.stalled = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = await reader.readexactly(size)
                api_key, _, correlation = struct.unpack(">hhi", request[:8])
                if api_key != ApiVersionResponse_v0.API_KEY:
                    self.stalled.set()
                    continue
                versions = [(ApiVersionResponse_v0.API_KEY, 0, 0), (3, 0, 1)]  # 3: metadata
                body = struct.pack(">i", correlation) + ApiVersionResponse_v0(0, versions).encode()
                writer.write(struct.pack(">i", len(body)) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@pytest.mark.parametrize("cancelled_by", ["the caller", "the probe's own timeout"])
async def test_a_probe_cut_short_while_the_broker_stalls_leaves_no_connection_open(
    cancelled_by: str,
) -> None:
    """aiokafka's bootstrap loses its connection when cancelled with the metadata request
    in flight (it closes it only on a Kafka error or its own timeout): a follower or a replay
    stopped then, or a probe's deadline, left a socket open, warned of when collected."""
    broker = StallingBroker()
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = dataclasses.replace(SETTINGS, bootstrap=f"127.0.0.1:{port}")
    try:
        if cancelled_by == "the caller":
            task = asyncio.create_task(kafka.probe(settings, 2.0))
            await asyncio.wait_for(broker.stalled.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(KafkaError):
                await kafka.probe(settings, 0.5)
        await asyncio.sleep(0.1)  # the client's close reaches the broker
        assert broker.open == 0
    finally:
        server.close()
        await server.wait_closed()
