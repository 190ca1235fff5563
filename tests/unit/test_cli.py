"""The ``c2bus`` command: help, and one-line errors with a non-zero exit instead of tracebacks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from tests.conftest import ROOT


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("C2BUS_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "c2bus", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("c2bus: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("args", [["--help"], ["kafka", "--help"], ["topics", "create", "--help"]])
def test_help(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 0
    assert "usage: c2bus" in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = run("launch")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_unreachable_bootstrap_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    (tmp_path / "admin.password").write_text("secret")
    env = {
        "C2BUS_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}",
        "C2BUS_KAFKA_REQUEST_TIMEOUT_MS": "2000",
        "C2BUS_KAFKA_PASSWORD_FILE": str(tmp_path / "admin.password"),
    }
    assert_one_line_error(run("topics", "create", env=env), "C2BUS_KAFKA_BOOTSTRAP", "127.0.0.1")
    assert_one_line_error(run("kafka", "start", "--timeout", "2", env=env), "C2BUS_KAFKA_BOOTSTRAP")


def test_an_external_cluster_without_credentials_is_one_line_naming_the_fix() -> None:
    env = {"C2BUS_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}"}
    assert_one_line_error(
        run("topics", "create", env=env), "'admin' has no password", "C2BUS_KAFKA_PASSWORD_FILE"
    )


def test_status_of_an_unreachable_external_cluster_exits_3(tmp_path: Path) -> None:
    (tmp_path / "admin.password").write_text("secret")
    env = {
        "C2BUS_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}",
        "C2BUS_KAFKA_PASSWORD_FILE": str(tmp_path / "admin.password"),
    }
    result = run("kafka", "status", env=env)
    assert result.returncode == 3
    assert "unreachable" in result.stdout


def test_topics_create_without_a_broker_says_how_to_start_one(tmp_path: Path) -> None:
    env = {
        "C2BUS_KAFKA_PORT": str(closed_port()),
        "C2BUS_HOME": str(tmp_path),
        "C2BUS_KAFKA_REQUEST_TIMEOUT_MS": "2000",
    }
    assert_one_line_error(run("topics", "create", env=env), "c2bus kafka start")


def test_port_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = {"C2BUS_KAFKA_PORT": str(port), "C2BUS_HOME": str(tmp_path)}
        assert_one_line_error(run("kafka", "start", env=env), f"port {port}", "C2BUS_KAFKA_PORT")


def test_missing_java_is_one_line(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "JAVA_HOME": ""}
    result = run("kafka", "fetch", env={**env})
    assert_one_line_error(result, "Java not found")


def test_bad_setting_is_one_line() -> None:
    assert_one_line_error(
        run("topics", "list", env={"C2BUS_TOPIC_PREFIX": "no spaces"}), "C2BUS_TOPIC_PREFIX"
    )


def test_reset_needs_confirmation(tmp_path: Path) -> None:
    assert_one_line_error(run("kafka", "reset", env={"C2BUS_HOME": str(tmp_path)}), "--yes")


def test_status_without_a_broker_exits_3(tmp_path: Path) -> None:
    result = run("kafka", "status", env={"C2BUS_HOME": str(tmp_path)})
    assert result.returncode == 3
    assert "no local Kafka is running" in result.stdout


def test_topics_list_uses_the_prefix() -> None:
    result = run("topics", "list", env={"C2BUS_TOPIC_PREFIX": "exercise"})
    assert result.returncode == 0
    assert "exercise.directives.submitted" in result.stdout


def test_schemas_check_passes_on_a_clean_checkout() -> None:
    result = run("schemas", "export", "--check")
    assert result.returncode == 0, result.stderr


def test_schemas_check_fails_when_a_file_is_stale(tmp_path: Path) -> None:
    assert run("schemas", "export", "--dir", str(tmp_path)).returncode == 0
    (tmp_path / "c2bus.sa.track.v1.schema.json").write_text("{}\n")
    assert_one_line_error(
        run("schemas", "export", "--check", "--dir", str(tmp_path)), "c2bus.sa.track.v1"
    )


def test_token_mints_the_units_it_acts_for(tmp_path: Path) -> None:
    """``c2bus token --acts-for`` puts the claim in the token that the ingest checks."""
    result = run(
        "token", "--unit", "C2-BRIDGE", "--acts-for", "MNC-NE,POL-12BDE",
        "--roles", "sa-publisher", env={"C2BUS_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert (claims["unit"], claims["acts_for"]) == ("C2-BRIDGE", ["MNC-NE", "POL-12BDE"])
    plain = run("token", env={"C2BUS_HOME": str(tmp_path)})
    assert "acts_for" not in jwt.decode(plain.stdout.strip(), options={"verify_signature": False})
