"""Kafka is the trust boundary: nobody gets in without credentials, and every principal can do
exactly what deploy/kafka/acls.yaml grants its role (read and write per topic, consumer groups,
transactional ids) and gets an authorisation error for everything else."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from c2bus.adapters.acls import Binding, Operation, Pattern, Resource, Roles, grant, revoke
from c2bus.adapters.kafka import client_options
from c2bus.adapters.settings import KafkaSecurity, KafkaSettings
from c2bus.adapters.topics import TopicNames
from c2bus.services.ingest.app import Ingest
from c2bus.tools.localkafka.secrets import LocalSecrets
from tests.integration.services import Console, Env, gateway, running
from tests.integration.test_gateway import get
from tests.unit.test_cli import run

ROLES = Roles.load()
PRINCIPALS = ROLES.principals()


def allowed(
    bindings: set[Binding], principal: str, resource: Resource, name: str, op: Operation
) -> bool:
    return any(
        b.principal == principal
        and b.resource is resource
        and b.operation is op
        and (b.name == name if b.pattern is Pattern.LITERAL else name.startswith(b.name))
        for b in bindings
    )


async def can_write(kafka: KafkaSettings, topic: str) -> bool:
    """Produce one record (no idempotence: only the topic's Write is asked for)."""
    quick = dataclasses.replace(kafka, request_timeout_ms=10_000)
    producer = AIOKafkaProducer(**client_options(quick), acks=1)
    await producer.start()
    try:
        async with asyncio.timeout(20):
            await producer.send_and_wait(topic, b"probe", key=b"k")
        return True
    except TopicAuthorizationFailedError:
        return False
    finally:
        await producer.stop()


async def can_read(kafka: KafkaSettings, topic: str) -> bool:
    """Fetch from the start of partition 0, without a group. Without even Describe the
    metadata names the topic unauthorised (a consumer would wait for it for ever); with
    Describe but not Read, the fetch is refused."""
    client = AIOKafkaClient(**client_options(kafka))
    await client.bootstrap()
    try:
        await client.add_topic(topic)
        await client.force_metadata_update()
        if topic in client.cluster.unauthorized_topics:
            return False
    finally:
        await client.close()
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        async with asyncio.timeout(20):
            await consumer.seek_to_beginning(tp)
            await consumer.getmany(tp, timeout_ms=500)
        return True
    except TopicAuthorizationFailedError:
        return False
    finally:
        await consumer.stop()


async def can_use_transactional_id(kafka: KafkaSettings, transactional_id: str) -> bool:
    producer = AIOKafkaProducer(**client_options(kafka), transactional_id=transactional_id)
    try:
        async with asyncio.timeout(20):
            await producer.start()
        return True
    except TransactionalIdAuthorizationFailed:
        return False
    finally:
        await producer.stop()


async def can_commit_in_group(kafka: KafkaSettings, group: str, topic: str) -> bool:
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        async with asyncio.timeout(20):
            await consumer.commit({tp: 0})
        return True
    except (GroupAuthorizationFailedError, TopicAuthorizationFailedError):
        return False
    finally:
        await consumer.stop()


async def test_every_principal_can_do_what_its_role_grants_and_nothing_else(
    env: Env, topics: TopicNames
) -> None:
    bindings = set(ROLES.bindings(env.prefix))
    writes: dict[tuple[str, str], bool] = {}
    reads: dict[tuple[str, str], bool] = {}
    for principal in PRINCIPALS:
        kafka = env.as_principal(principal)
        for topic in topics.all():
            writes[principal, topic] = await can_write(kafka, topic)
            reads[principal, topic] = await can_read(kafka, topic)
    expected_writes = {
        (p, t): allowed(bindings, p, Resource.TOPIC, t, Operation.WRITE) for p, t in writes
    }
    expected_reads = {
        (p, t): allowed(bindings, p, Resource.TOPIC, t, Operation.READ) for p, t in reads
    }
    assert writes == expected_writes
    assert reads == expected_reads
    # what the trust model rests on, spelt out
    for topic in (topics.approved, topics.decisions, topics.held):
        assert {p for p in PRINCIPALS if writes[p, topic]} == {"enforcer"}
    for topic in (topics.policy, topics.policy_history):
        assert {p for p in PRINCIPALS if writes[p, topic]} == {"policy-api"}
    assert {t for t in topics.all() if writes["reader", t]} == set()
    assert {t for t in topics.all() if reads["reader", t]} == set(topics.all())


async def test_transactional_ids_and_groups_belong_to_their_roles(
    env: Env, topics: TopicNames
) -> None:
    enforcer_txn = f"{env.prefix}.enforcer.p0"
    publisher_txn = f"{env.prefix}.policy.publisher.alliance-main"
    for principal in PRINCIPALS:
        kafka = env.as_principal(principal)
        assert await can_use_transactional_id(kafka, enforcer_txn) == (principal == "enforcer")
        assert await can_use_transactional_id(kafka, publisher_txn) == (principal == "policy-api")
        may_commit = await can_commit_in_group(kafka, f"{env.prefix}.enforcer", topics.submitted)
        assert may_commit == (principal == "enforcer"), principal


async def refused(kafka: KafkaSettings) -> bool:
    quick = dataclasses.replace(kafka, request_timeout_ms=5_000)
    producer = AIOKafkaProducer(**client_options(quick))
    try:
        async with asyncio.timeout(30):
            await producer.start()
        return False
    except KafkaConnectionError:
        return True
    finally:
        await producer.stop()


@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")  # see the end
async def test_clients_without_valid_credentials_are_refused(env: Env, tmp_path: Path) -> None:
    admin = env.kafka
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    security = admin.security
    assert security.password_file is not None
    cert, key = LocalSecrets(security.password_file.parent).client_cert("admin")
    cases = {
        "anonymous, in clear": KafkaSecurity(protocol="PLAINTEXT"),
        "TLS with the admin's certificate, no SASL": dataclasses.replace(
            security, protocol="SSL", cert_file=cert, key_file=key
        ),
        "wrong password": dataclasses.replace(security, password_file=wrong),
        "unknown user": dataclasses.replace(security, user="mallory"),
        "broker not trusted": dataclasses.replace(security, ca_file=None),
    }
    for name, case in cases.items():
        assert await refused(dataclasses.replace(admin, security=case)), name
    assert not await refused(admin)  # and the real credentials get in
    # aiokafka leaves the socket of a connection refused during its handshake to the
    # garbage collector: collect it here, not in whichever test runs next
    gc.collect()


def test_the_secrets_are_readable_by_their_owner_only(kafka: KafkaSettings) -> None:
    assert kafka.security.password_file is not None
    folder = kafka.security.password_file.parent
    if folder.name != "secrets":
        pytest.skip("an external cluster: its secrets are not ours")
    assert folder.stat().st_mode & 0o777 == 0o700
    files = list(folder.iterdir())
    assert len(files) >= 2 + len(PRINCIPALS)
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)


async def test_a_sensor_feed_is_onboarded_and_removed_with_one_command_each(
    env: Env, topics: TopicNames, tmp_path: Path
) -> None:
    from tests.integration.conftest import TEST_PORT, local_settings  # noqa: PLC0415

    cli_env = {
        "C2BUS_HOME": str(local_settings().home),
        "C2BUS_KAFKA_PORT": TEST_PORT,
        "C2BUS_TOPIC_PREFIX": env.prefix,
    }
    if env.kafka.external:
        cli_env.update(env.kafka.environment())
    name = f"radar-{env.prefix[-6:]}"
    added = run("kafka", "principal", "add", "--role", "sensor", name, env=cli_env)
    assert added.returncode == 0, added.stderr
    assert f"sasl.username={name}" in added.stdout  # its client configuration
    sensor = env.as_principal(name)
    assert await can_write(sensor, topics.sa)
    assert not [t for t in topics.all() if t != topics.sa and await can_write(sensor, t)]
    assert not await can_read(sensor, topics.sa)  # a feed publishes; it sees nothing
    again = run("kafka", "principal", "add", "--role", "sensor", name, env=cli_env)
    assert again.returncode == 1 and "exists already" in again.stderr

    kept = tmp_path / "kept.password"  # what a removed feed still knows
    assert sensor.security.password_file is not None
    kept.write_text(sensor.security.password_file.read_text())
    removed = run("kafka", "principal", "remove", name, env=cli_env)
    assert removed.returncode == 0, removed.stderr
    assert "removed" in removed.stderr
    assert not sensor.security.password_file.exists()
    await asyncio.sleep(1)  # the deletion reaches the broker's credential cache
    gone = dataclasses.replace(sensor.security, password_file=kept)
    assert await refused(dataclasses.replace(sensor, security=gone))


def test_a_refused_client_is_told_why_in_one_line(env: Env, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    other = LocalSecrets(tmp_path / "other")  # a CA that did not sign the brokers' certificate
    other.ensure([])
    base = {**env.kafka.environment(), "C2BUS_TOPIC_PREFIX": env.prefix}
    cases = {
        "refused the credentials of 'admin'": {"C2BUS_KAFKA_PASSWORD_FILE": str(wrong)},
        "is not trusted": {"C2BUS_KAFKA_CA_FILE": str(other.ca_file)},
        "expects TLS": {"C2BUS_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
    }
    for needle, override in cases.items():
        result = run("topics", "create", env={**base, **override})
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("c2bus: error:")]
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert needle in lines[0] and "Traceback" not in result.stderr


def refusals(metrics_text: str) -> dict[str, float]:
    """``c2bus_kafka_refusals_total`` by error, from a /metrics page (each known error is
    there from the start, at 0)."""
    found = {
        sample.labels["error"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "c2bus_kafka_refusals"
        for sample in family.samples
        if sample.name == "c2bus_kafka_refusals_total"
    }
    assert {"TopicAuthorizationFailedError", "SaslAuthenticationFailed"} <= set(found)
    return found


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


async def test_a_service_refused_by_kafka_at_run_time_says_so_counts_it_and_serves_on(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    """A principal short of a grant while the service runs: the request Kafka refuses gets a
    clear error, ``c2bus_kafka_refusals_total{error}`` counts it (C2busKafkaRefused alerts on
    it), and what the principal may do still works."""
    # The ingest as the simulator's principal: a sensor feed, which may write SA only.
    ingest = Ingest(env.settings("ingest", C2BUS_KAFKA_USER="simulator"), env.verifier())
    token = env.token(roles=("sa-publisher", "directive-publisher"))
    async with (
        running(ingest, lambda: ingest.producer is not None),
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ingest.http.port}",
            headers={"Authorization": f"Bearer {token}"},
        ) as http,
    ):
        before = refusals((await http.get("/metrics")).text)
        async with asyncio.timeout(30):
            directive = await http.post("/v1/directives", json=valid_example("directive"))
        assert directive.status_code == 503, directive.text
        assert "Kafka refused" in directive.json()["detail"], directive.text
        assert (await http.post("/v1/sa", json=valid_example("sa-track"))).status_code == 202
        after = refusals((await http.get("/metrics")).text)
        # counted in this service's process (the test's, here): the one refused write
        assert delta(before, after) == {"TopicAuthorizationFailedError": 1.0}, after

    # The gateway, its grants withdrawn while consoles are connected, then given back.
    body = valid_example("directive")["data"]
    body = {k: body[k] for k in ("kind", "target", "expires", "area", "text")}
    commander = env.token(unit="JFC-BRUNSSUM", roles=("console", "commander"))
    async with (
        gateway(env) as service,
        Console.connect(service.port, commander, ("directives",)) as console,
    ):
        url = f"http://127.0.0.1:{service.ops.port}/metrics"
        before = refusals((await asyncio.to_thread(get, url))[1])
        assert await revoke(env.kafka, "gateway")
        submit = {
            "op": "submit",
            "id": "sub-1",
            "directive": body,
            "classification": "NATO SECRET",
            "releasableto": "NATO",
        }
        await console.ws.send(orjson.dumps(submit).decode())
        reply = await console.reply_to("sub-1", ("submitted", "error"))
        assert (reply["op"], reply["code"]) == ("error", "unavailable"), reply
        assert "Kafka refused" in reply["message"] and "gateway" not in reply["message"]
        await asyncio.sleep(2)  # its fetches are refused too, and backed off
        after = refusals((await asyncio.to_thread(get, url))[1])
        assert (
            after["TopicAuthorizationFailedError"]
            >= before.get("TopicAuthorizationFailedError", 0) + 2
        ), after  # the submission and at least one fetch

        await grant(env.kafka, env.prefix)
        async with asyncio.timeout(30):  # serves on once granted again, no restart
            while True:
                await console.ws.send(orjson.dumps(submit | {"id": "sub-2"}).decode())
                reply = await console.reply_to("sub-2", ("submitted", "error"))
                if reply["op"] == "submitted":
                    break
                await asyncio.sleep(0.5)
