"""A client that Kafka refuses is told why in one line, and which setting to check: the
broker's own reason (logged by aiokafka while it bootstraps) or its authorisation error."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, TransactionalIdAuthorizationFailed

from c2bus.adapters.kafka import refusal
from c2bus.adapters.settings import KafkaSecurity, KafkaSettings
from c2bus.errors import KafkaRefused, KafkaUnavailable

SCRAM = KafkaSettings.at(
    "k1:9092", KafkaSecurity(user="gateway", password_file=Path("/s/gateway.password"))
)
BOOTSTRAP_FAILED = KafkaConnectionError("Unable to bootstrap from [('k1', 9092)]")


@pytest.mark.parametrize(
    ("settings", "reason", "needles"),
    [
        (
            SCRAM,
            "[Error 58] SaslAuthenticationFailed: Authentication failed during authentication "
            "due to invalid credentials with SASL mechanism SCRAM-SHA-512",
            ("refused the credentials of 'gateway'", "C2BUS_KAFKA_PASSWORD_FILE"),
        ),
        (
            SCRAM,
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate",
            ("the certificate of Kafka at k1:9092 is not trusted", "C2BUS_KAFKA_CA_FILE"),
        ),
        (
            KafkaSettings.at("k1:9092", KafkaSecurity(protocol="PLAINTEXT")),
            "KafkaConnectionError: Connection at k1:9092 closed",
            ("closed the connection", "C2BUS_KAFKA_SECURITY_PROTOCOL"),
        ),
    ],
)
def test_the_brokers_reason_names_the_setting_to_check(
    settings: KafkaSettings, reason: str, needles: tuple[str, ...]
) -> None:
    error = refusal(settings, reason, BOOTSTRAP_FAILED)
    assert isinstance(error, KafkaRefused)
    assert "\n" not in str(error) and "k1:9092" in str(error)
    for needle in needles:
        assert needle in str(error)


def test_an_authorisation_error_points_at_the_acls() -> None:
    error = refusal(SCRAM, None, TransactionalIdAuthorizationFailed("x.enforcer.p0"))
    assert isinstance(error, KafkaRefused)
    assert "'gateway' is not allowed" in str(error) and "c2bus kafka acls show" in str(error)


def test_silence_is_an_unavailable_broker_not_a_refusal() -> None:
    for reason in (None, '[Errno 111] Connect call failed ("127.0.0.1", 9092)'):
        error = refusal(SCRAM, reason, BOOTSTRAP_FAILED)
        assert type(error) is KafkaUnavailable
        assert str(error).startswith("no Kafka broker answered at k1:9092")
