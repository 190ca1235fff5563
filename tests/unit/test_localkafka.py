"""The local-broker tooling refuses bad situations with one-line causes and fixes.

These run without Java or a broker: each failure is detected before a JVM would start.
"""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from c2bus.adapters.settings import LocalKafkaSettings, project_root
from c2bus.errors import LocalKafkaError
from c2bus.tools.localkafka import LocalCluster, kafka_version
from c2bus.tools.localkafka.storage import new_cluster_id, principals
from c2bus.tools.localkafka.toolchain import fetch_jars, find_java


def settings(tmp_path: Path, port: int = 27092) -> LocalKafkaSettings:
    return LocalKafkaSettings.from_env(
        {
            "C2BUS_HOME": str(tmp_path / "home"),
            "C2BUS_KAFKA_PORT": str(port),
            "C2BUS_KAFKA_JARS_DIR": str(tmp_path / "jars"),
        }
    )


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def fake_tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_kafka_version_comes_from_the_pom() -> None:
    version = kafka_version(project_root() / "deploy")
    assert version.split(".")[0] == "4"


def test_cluster_ids_are_kafka_style() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_only_one_or_three_nodes(tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match="use 1 or 3"):
        LocalCluster(settings(tmp_path), nodes=2)


def test_port_in_use_is_named_with_the_fix(tmp_path: Path, listening_port: int) -> None:
    cluster = LocalCluster(settings(tmp_path, port=listening_port))
    with pytest.raises(LocalKafkaError) as err:
        cluster.start()
    message = str(err.value)
    assert f"port {listening_port}" in message
    assert "C2BUS_KAFKA_PORT" in message
    assert "\n" not in message


def test_data_directory_of_another_cluster_is_refused(tmp_path: Path) -> None:
    cluster = LocalCluster(settings(tmp_path))
    cluster.dir.mkdir(parents=True)
    (cluster.dir / "cluster.id").write_text("AAAAAAAAAAAAAAAAAAAAAA\n")
    data = cluster.node_dir(1) / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text(
        "version=1\ncluster.id=BBBBBBBBBBBBBBBBBBBBBB\nnode.id=1\n"
    )
    with pytest.raises(LocalKafkaError) as err:
        cluster.start()
    assert "belongs to Kafka cluster BBBBBBBBBBBBBBBBBBBBBB" in str(err.value)
    assert "c2bus kafka reset" in str(err.value)


def test_three_node_configs_name_every_voter(tmp_path: Path) -> None:
    cluster = LocalCluster(settings(tmp_path, port=28092), nodes=3)
    cluster.secrets.ensure(principals())
    for node_id in cluster.node_ids():
        cluster.files.render(node_id)
    path = cluster.properties_path(2)
    props = path.read_text()
    assert "node.id=2" in props
    voters = "1@localhost:28093,2@localhost:28095,3@localhost:28097"
    assert f"controller.quorum.voters={voters}" in props
    assert "listeners=SASL_SSL://localhost:28094,CONTROLLER://localhost:28095" in props
    assert "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL" in props
    assert "allow.everyone.if.no.acl.found=false" in props
    assert "ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT" in props
    assert cluster.secrets.password("broker") in props  # the brokers' own login
    assert path.stat().st_mode & 0o777 == 0o600
    assert "min.insync.replicas=2" in props
    assert "offsets.topic.replication.factor=3" in props
    assert "${" not in props


def test_missing_java_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(LocalKafkaError, match="Java not found: install Java 17"):
        find_java()


def test_bogus_java_home_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(LocalKafkaError, match="has no bin/java"):
        find_java()


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "java", "echo 'openjdk version \"11.0.22\" 2024-01-16' >&2")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(LocalKafkaError, match="Java 17\\+ is required, found Java 11"):
        find_java()


def test_java_17_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "java", "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_java() == bin_dir / "java"


def test_missing_maven_is_named_when_jars_are_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(LocalKafkaError, match="Maven not found"):
        fetch_jars(project_root() / "deploy", tmp_path / "jars", lambda _: None)


def test_maven_failure_shows_its_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(
        bin_dir, "mvn", "echo '[ERROR] Could not transfer artifact: network unreachable'; exit 1"
    )
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(LocalKafkaError) as err:
        fetch_jars(project_root() / "deploy", tmp_path / "jars", lambda _: None)
    assert "Maven could not fetch the Kafka" in str(err.value)
    assert "network unreachable" in str(err.value)
    assert not (tmp_path / "jars" / f"kafka-{kafka_version(project_root() / 'deploy')}").exists()


def test_cached_jars_need_neither_maven_nor_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = kafka_version(project_root() / "deploy")
    cached = tmp_path / "jars" / f"kafka-{version}"
    cached.mkdir(parents=True)
    (cached / ".complete").write_text(version)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no mvn reachable
    assert fetch_jars(project_root() / "deploy", tmp_path / "jars", lambda _: None) == cached
