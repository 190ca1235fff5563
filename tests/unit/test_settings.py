"""Settings are read from the environment with clear errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from c2bus.adapters.settings import (
    EnforcerSettings,
    KafkaSettings,
    LocalKafkaSettings,
    PrometheusSettings,
    ServiceSettings,
)
from c2bus.adapters.topics import TOPICS, TopicNames
from c2bus.errors import ConfigError


def test_defaults_point_at_the_local_broker_with_prefix_c2() -> None:
    settings = KafkaSettings.from_env({})
    assert settings.bootstrap == "localhost:9092"
    assert not settings.external
    assert settings.topic_prefix == "c2"


def test_bootstrap_variable_selects_an_existing_cluster() -> None:
    settings = KafkaSettings.from_env({"C2BUS_KAFKA_BOOTSTRAP": " kafka-1:9092,kafka-2:9092 "})
    assert settings.bootstrap == "kafka-1:9092,kafka-2:9092"
    assert settings.external


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"C2BUS_TOPIC_PREFIX": "bad prefix"}, "C2BUS_TOPIC_PREFIX"),
        ({"C2BUS_KAFKA_PORT": "ninety"}, "C2BUS_KAFKA_PORT='ninety' is not an integer"),
        ({"C2BUS_KAFKA_PORT": "80"}, "C2BUS_KAFKA_PORT=80 is out of range"),
        ({"C2BUS_KAFKA_HEAP_MB": "16"}, "C2BUS_KAFKA_HEAP_MB=16 is out of range"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        KafkaSettings.from_env(env)


def test_node_ports_follow_the_base_port(tmp_path: Path) -> None:
    local = LocalKafkaSettings.from_env({"C2BUS_KAFKA_PORT": "19092", "C2BUS_HOME": str(tmp_path)})
    assert local.home == tmp_path.resolve()
    assert [local.broker_port(i) for i in range(3)] == [19092, 19094, 19096]
    assert [local.controller_port(i) for i in range(3)] == [19093, 19095, 19097]
    assert local.bootstrap(3) == "localhost:19092,localhost:19094,localhost:19096"


def test_topic_names_cover_the_design_topics_under_one_prefix() -> None:
    names = TopicNames("c2")
    assert set(names.all()) == {
        "c2.sa",
        "c2.directives.submitted",
        "c2.directives.approved",
        "c2.audit.checkpoints",
        "c2.decisions",
        "c2.directives.status",
        "c2.directives.held",
        "c2.policy",
        "c2.policy.history",
        "c2.dlq",
    }
    assert {names.sa, names.submitted, names.approved, names.decisions} <= set(names.all())
    assert {names.status, names.policy, names.dlq} <= set(names.all())
    assert TopicNames("x").dlq == "x.dlq"


def test_policy_is_compacted_and_decisions_are_kept() -> None:
    by_role = {spec.role: spec for spec in TOPICS}
    assert by_role["policy"].config["cleanup.policy"] == "compact"
    assert by_role["decisions"].config["retention.ms"] == "-1"


def test_enforcer_is_exactly_once_with_a_100ms_commit_interval_by_default() -> None:
    settings = EnforcerSettings.from_env({})
    assert settings.exactly_once
    assert settings.commit_interval_ms == 100
    off = EnforcerSettings.from_env(
        {"C2BUS_ENFORCER_EXACTLY_ONCE": "false", "C2BUS_ENFORCER_COMMIT_INTERVAL_MS": "20"}
    )
    assert not off.exactly_once
    assert off.commit_interval_ms == 20


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"C2BUS_ENFORCER_EXACTLY_ONCE": "maybe"}, "C2BUS_ENFORCER_EXACTLY_ONCE='maybe'"),
        ({"C2BUS_ENFORCER_COMMIT_INTERVAL_MS": "0"}, "C2BUS_ENFORCER_COMMIT_INTERVAL_MS=0"),
        ({"C2BUS_ENFORCER_WATCHDOG_S": "1"}, "C2BUS_ENFORCER_WATCHDOG_S=1"),
    ],
)
def test_bad_enforcer_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EnforcerSettings.from_env(env)


def test_prometheus_settings_default_to_the_deploy_config_and_refuse_bad_values() -> None:
    assert PrometheusSettings.from_env({}) == PrometheusSettings(9090, None)
    given = {"C2BUS_PROMETHEUS_PORT": "19090", "C2BUS_PROMETHEUS_SCRAPE_S": "1"}
    assert PrometheusSettings.from_env(given) == PrometheusSettings(19090, 1.0)
    for env, message in (
        ({"C2BUS_PROMETHEUS_PORT": "x"}, "C2BUS_PROMETHEUS_PORT='x' is not an integer"),
        ({"C2BUS_PROMETHEUS_SCRAPE_S": "fast"}, "C2BUS_PROMETHEUS_SCRAPE_S='fast' is not a"),
        ({"C2BUS_PROMETHEUS_SCRAPE_S": "0"}, "C2BUS_PROMETHEUS_SCRAPE_S=0 is out of range"),
    ):
        with pytest.raises(ConfigError, match=message):
            PrometheusSettings.from_env(env)


def test_each_service_validates_only_its_own_settings() -> None:
    bad = {"C2BUS_GATEWAY_BUFFER_BYTES": "lots", "C2BUS_ENFORCER_COMMIT_INTERVAL_MS": "0"}
    assert ServiceSettings.from_env("ingest", bad).port == 8081
    assert ServiceSettings.from_env("policy_api", bad).port == 8083
    with pytest.raises(ConfigError, match="C2BUS_GATEWAY_BUFFER_BYTES='lots'"):
        ServiceSettings.from_env("gateway", bad)
    with pytest.raises(ConfigError, match="C2BUS_ENFORCER_COMMIT_INTERVAL_MS=0"):
        ServiceSettings.from_env("enforcer", bad)


def test_kafka_security_defaults_to_scram_over_tls_as_the_services_own_principal(
    tmp_path: Path,
) -> None:
    env = {"C2BUS_HOME": str(tmp_path)}
    enforcer = ServiceSettings.from_env("enforcer", env).kafka.security
    assert (enforcer.protocol, enforcer.mechanism, enforcer.user) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "enforcer",
    )
    assert enforcer.password_file == tmp_path.resolve() / "secrets" / "enforcer.password"
    assert enforcer.ca_file == tmp_path.resolve() / "secrets" / "ca.crt"
    assert ServiceSettings.from_env("policy_api", env).kafka.security.user == "policy-api"
    assert KafkaSettings.from_env(env).security.user == "admin"  # the CLI's


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"C2BUS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "'SASL_PLAINTEXT' is not supported"),
        ({"C2BUS_KAFKA_SASL_MECHANISM": "PLAIN"}, "C2BUS_KAFKA_SASL_MECHANISM='PLAIN'"),
    ],
)
def test_unsupported_kafka_security_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KafkaSettings.from_env(env)


def test_a_missing_password_file_names_the_user_the_file_and_the_fix(tmp_path: Path) -> None:
    env = {"C2BUS_KAFKA_BOOTSTRAP": "k:9093", "C2BUS_KAFKA_SECRETS_DIR": str(tmp_path)}
    security = KafkaSettings.from_env(env, principal="gateway").security
    with pytest.raises(ConfigError) as err:
        security.password()
    assert "'gateway'" in str(err.value) and "gateway.password" in str(err.value)
    assert "C2BUS_KAFKA_PASSWORD_FILE" in str(err.value)
