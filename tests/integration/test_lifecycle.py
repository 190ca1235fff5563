"""`c2bus kafka start|status|stop` on a broker of its own: idempotent start, clean stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from c2bus.adapters.settings import KafkaSettings
from c2bus.tools.localkafka import LocalCluster
from tests.integration.conftest import local_settings
from tests.integration.services import kafka_vars
from tests.unit.test_cli import run

PORT = "21092"  # below the ephemeral port range


def process_gone(pid: int) -> bool:
    """No such process, or only its exit status is left for the parent to reap."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except FileNotFoundError:
        return True
    return state == "Z"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    LocalCluster(local_settings(C2BUS_HOME=str(tmp_path), C2BUS_KAFKA_PORT=PORT)).stop()


def test_start_twice_is_one_broker_and_stop_leaves_no_process(home: Path) -> None:
    env = {"C2BUS_HOME": str(home), "C2BUS_KAFKA_PORT": PORT}
    cluster = LocalCluster(local_settings(C2BUS_HOME=str(home), C2BUS_KAFKA_PORT=PORT))

    first = run("kafka", "start", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"localhost:{PORT}"
    assert "ready: 1 broker" in first.stderr
    [pid] = cluster.pids(1)

    second = run("kafka", "start", env=env)
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stderr
    assert cluster.pids(1) == [pid]

    status = run("kafka", "status", env=env)
    assert status.returncode == 0
    assert "healthy" in status.stdout
    assert f"pid {pid}" in status.stdout

    stop = run("kafka", "stop", env=env)
    assert stop.returncode == 0
    assert f"stopped: node 1 (pid {pid})" in stop.stderr
    assert cluster.pids(1) == []
    assert process_gone(pid)

    after = run("kafka", "status", env=env)
    assert after.returncode == 3


def test_restart_keeps_the_data_and_the_cluster_id(home: Path) -> None:
    env = {"C2BUS_HOME": str(home), "C2BUS_KAFKA_PORT": PORT}
    cluster = LocalCluster(local_settings(C2BUS_HOME=str(home), C2BUS_KAFKA_PORT=PORT))
    assert run("kafka", "start", env=env).returncode == 0
    cluster_id = (cluster.dir / "cluster.id").read_text()
    assert run("kafka", "stop", env=env).returncode == 0
    again = run("kafka", "start", env=env)
    assert again.returncode == 0, again.stderr
    assert (cluster.dir / "cluster.id").read_text() == cluster_id


def test_bootstrap_variable_uses_the_existing_cluster(kafka: KafkaSettings, home: Path) -> None:
    kafka_bootstrap = kafka.bootstrap
    env = {**kafka_vars(kafka), "C2BUS_HOME": str(home)}
    started = run("kafka", "start", env=env)
    assert started.returncode == 0, started.stderr
    assert f"using the existing cluster at {kafka_bootstrap}" in started.stderr
    assert not (home / "kafka").exists()  # no local broker was set up

    prefix = f"ext{home.name[-8:].lower().replace('_', '')}"
    created = run("topics", "create", env={**env, "C2BUS_TOPIC_PREFIX": prefix})
    assert created.returncode == 0, created.stderr
    assert f"created {prefix}.policy" in created.stderr

    status = run("kafka", "status", env=env)
    assert status.returncode == 0
    assert f"external cluster {kafka_bootstrap}" in status.stdout
