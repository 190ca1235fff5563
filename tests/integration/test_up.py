"""`c2bus up` (what `make run` runs) brings the whole system up on a broker of its own,
a console shows live tracks, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from c2bus.tools.localkafka import LocalCluster
from tests.conftest import ROOT
from tests.integration.conftest import local_settings
from tests.integration.test_lifecycle import process_gone

KAFKA_PORT = "25092"  # below the ephemeral port range


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Up:
    """A running ``c2bus up``: its ports, its environment and what it has printed."""

    process: subprocess.Popen[str]
    ports: dict[str, int]
    env: dict[str, str]
    #: the broker it runs on (clients authenticate with its credentials)
    cluster: LocalCluster
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def running_up(
    home: Path,
    kafka_port: str,
    args: list[str],
    services: tuple[str, ...],
    extra_env: dict[str, str] | None = None,
) -> Iterator[Up]:
    """Start ``c2bus up`` (what ``make run`` runs) on a broker of its own, with each of
    ``services`` (``INGEST``, ``GATEWAY``, ``PROMETHEUS``…) on a free port; wait until it
    is up; on exit stop it with Ctrl-C and wait for it (``Up.process.returncode``)."""
    ports = {name: free_port() for name in services}
    env = {k: v for k, v in os.environ.items() if not k.startswith("C2BUS_")}
    env.update(
        {
            "C2BUS_HOME": str(home),
            "C2BUS_KAFKA_PORT": kafka_port,
            **{f"C2BUS_{name}_PORT": str(port) for name, port in ports.items()},
        }
    )
    env.update({k: v for k, v in os.environ.items() if k == "C2BUS_KAFKA_JARS_DIR"})
    env.update(extra_env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "c2bus", "up", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    cluster = LocalCluster(local_settings(C2BUS_HOME=str(home), C2BUS_KAFKA_PORT=kafka_port))
    up = Up(process, ports, env, cluster)
    reader = threading.Thread(target=lambda: up.lines.extend(iter(process.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("c2bus is up:" in line for line in up.lines):
            assert process.poll() is None, up.output
            assert time.monotonic() < deadline, up.output
            time.sleep(0.2)
        yield up
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(90)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            reader.join(10)
            if process.stdout is not None:
                process.stdout.close()


def test_up_console_and_ctrl_c(tmp_path: Path) -> None:
    cluster = LocalCluster(local_settings(C2BUS_HOME=str(tmp_path), C2BUS_KAFKA_PORT=KAFKA_PORT))
    services = ("INGEST", "ENFORCER", "GATEWAY", "GATEWAY_OPS", "PROMETHEUS")
    with running_up(tmp_path, KAFKA_PORT, ["--tracks", "5", "--rate", "2"], services) as up:
        ports, output = up.ports, up.output
        assert f"ws://127.0.0.1:{ports['GATEWAY']}" in output
        assert f"http://127.0.0.1:{ports['GATEWAY_OPS']}/metrics" in output
        assert f"http://127.0.0.1:{ports['INGEST']}/docs" in output
        assert "started by c2bus up" in output

        console = subprocess.run(
            [sys.executable, "-m", "c2bus", "console", "--plain", "--count", "8",
             "--duration", "60", "--url", f"ws://127.0.0.1:{ports['GATEWAY']}"],
            cwd=ROOT, env=up.env, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert console.returncode == 0, console.stderr
        tracks = [ln for ln in console.stdout.splitlines() if ln.startswith("TRACK TRK-")]
        assert len(tracks) >= 5, console.stdout
        assert console.stdout.startswith("CONNECTED as console-jfc-brunssum")

        for name, path, needle in (
            ("ENFORCER", "/metrics", "c2bus_enforcer_decisions"),
            ("INGEST", "/readyz", "ready"),
            ("GATEWAY_OPS", "/metrics", "c2bus_gateway_connections"),
        ):
            url = f"http://127.0.0.1:{ports[name]}{path}"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert needle in response.read().decode()
    output = up.output
    assert up.process.returncode == 0, output
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]
    assert len(pids) >= 5  # broker, enforcer, ingest, gateway, simulator (and Prometheus)
    assert all(process_gone(pid) for pid in pids), output
    assert cluster.pids(1) == []
    assert "local 1-node Kafka stopped" in output
