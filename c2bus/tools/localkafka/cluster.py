"""Start, probe and stop the project's local Kafka nodes (KRaft combined mode).

Layout under ``C2BUS_HOME`` (default ``.c2bus/`` in the checkout)::

    kafka/1-node/cluster.id             the cluster id every node's storage is formatted with
    kafka/1-node/node-1/server.properties, data/, logs/server.log, stdout.log, pid
    kafka/3-node/…                      the same for the three-node cluster

A node's process is found by its command line (the path of its ``server.properties``), so
a lost pid file never leaves an untracked broker behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from c2bus.adapters.kafka import ClusterInfo, probe
from c2bus.adapters.settings import KafkaSecurity, KafkaSettings, LocalKafkaSettings
from c2bus.errors import KafkaUnavailable, LocalKafkaError
from c2bus.tools.localkafka.secrets import ADMIN, LocalSecrets
from c2bus.tools.localkafka.storage import NodeFiles, principals
from c2bus.tools.localkafka.toolchain import Toolchain

Progress = Callable[[str], None]

SUPPORTED_NODES = (1, 3)
_JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
_CAUSES = (
    ("Address already in use", "a port of this node is already in use"),
    ("Invalid cluster.id", "the data directory belongs to another cluster id"),
    ("clusterId", "the data directory belongs to another cluster id"),
    ("OutOfMemoryError", "the broker ran out of heap: raise C2BUS_KAFKA_HEAP_MB"),
)


def _noop(_: str) -> None:
    return None


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((socket.gethostbyname(host), port))
        except OSError:
            return False
    return True


def _pids_running(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (Linux ``/proc``)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except (OSError, IndexError):
            continue
        if state != "Z" and marker.encode() in cmdline and b"kafka.Kafka" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: int
    broker_port: int
    controller_port: int
    pid: int | None

    @property
    def running(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    nodes: tuple[NodeStatus, ...]
    bootstrap: str
    info: ClusterInfo | None

    @property
    def running(self) -> bool:
        return any(n.running for n in self.nodes)

    @property
    def healthy(self) -> bool:
        return (
            all(n.running for n in self.nodes)
            and self.info is not None
            and len(self.info.broker_ids) == len(self.nodes)
        )


class LocalCluster:
    """One local Kafka cluster of 1 or 3 nodes, managed through its directory."""

    def __init__(self, settings: LocalKafkaSettings, nodes: int = 1) -> None:
        if nodes not in SUPPORTED_NODES:
            raise LocalKafkaError(f"--nodes {nodes} is not supported: use 1 or 3")
        self.settings = settings
        self.nodes = nodes
        self.dir = settings.home / "kafka" / f"{nodes}-node"
        self.bootstrap = settings.bootstrap(nodes)
        self.secrets = LocalSecrets(settings.secrets_dir, (settings.host,))
        self.files = NodeFiles(settings, nodes, self.dir, self.secrets)

    def client(self, principal: str = ADMIN) -> KafkaSettings:
        """Settings for a client of this cluster authenticating as ``principal``."""
        security = KafkaSecurity(
            user=principal,
            password_file=self.secrets.password_file(principal),
            ca_file=self.secrets.ca_file,
        )
        return KafkaSettings.at(self.bootstrap, security)

    def open_client(self) -> KafkaSettings:
        """Settings for an anonymous PLAINTEXT client of the open listener, where the cluster
        has one (C2BUS_KAFKA_PLAINTEXT_PORT: for measuring the cost of security only)."""
        base = self.settings.plaintext_port
        if base is None:
            raise LocalKafkaError("this cluster has no open listener (C2BUS_KAFKA_PLAINTEXT_PORT)")
        bootstrap = ",".join(f"{self.settings.host}:{base + i}" for i in range(self.nodes))
        return KafkaSettings.at(bootstrap, KafkaSecurity(protocol="PLAINTEXT"))

    def mtls_client(self, principal: str) -> KafkaSettings:
        """Settings for a client of this cluster with a certificate for ``principal`` (made
        on first use), on the nodes' MTLS listener."""
        cert, key = self.secrets.client_cert(principal)
        security = KafkaSecurity(
            protocol="SSL",
            user=principal,
            ca_file=self.secrets.ca_file,
            cert_file=cert,
            key_file=key,
        )
        return KafkaSettings.at(self.settings.mtls_bootstrap(self.nodes), security)

    # --- layout ---------------------------------------------------------------------------

    def node_dir(self, node_id: int) -> Path:
        return self.files.node_dir(node_id)

    def properties_path(self, node_id: int) -> Path:
        return self.files.properties_path(node_id)

    def node_ids(self) -> range:
        return range(1, self.nodes + 1)

    def pids(self, node_id: int) -> list[int]:
        return _pids_running(str(self.properties_path(node_id)))

    def status(self, probe_timeout_s: float = 5.0) -> ClusterStatus:
        nodes = tuple(
            NodeStatus(
                node_id=i,
                broker_port=self.settings.broker_port(i - 1),
                controller_port=self.settings.controller_port(i - 1),
                pid=next(iter(self.pids(i)), None),
            )
            for i in self.node_ids()
        )
        info: ClusterInfo | None = None
        if any(n.running for n in nodes):
            with contextlib.suppress(KafkaUnavailable):
                info = asyncio.run(probe(self.client(), probe_timeout_s))
        return ClusterStatus(nodes, self.bootstrap, info)

    # --- start ----------------------------------------------------------------------------

    def start(self, progress: Progress = _noop, timeout_s: float | None = None) -> ClusterInfo:
        """Start every node that is not running and wait until all answer metadata requests.

        Idempotent: nodes already running are left alone, so starting twice gives one
        cluster, and starting after one node died restarts just that node.
        """
        timeout = float(timeout_s or self.settings.start_timeout_s)
        for other in SUPPORTED_NODES:
            if other != self.nodes and LocalCluster(self.settings, other).status(1).running:
                raise LocalKafkaError(
                    f"a local {other}-node Kafka is running: stop it first with `c2bus kafka stop`"
                )
        to_start = [i for i in self.node_ids() if not self.pids(i)]
        for node_id in set(self.node_ids()) - set(to_start):
            self.files.check_secured(node_id)
        if not to_start:
            info = self._wait_ready([], progress, timeout)
            progress(f"already running: {self._describe(info)}")
            return info
        # Cheap local checks first, then Java and the jars (which may need the network).
        self._check_ports(to_start)
        for made in self.secrets.ensure(principals()):
            progress(f"created {made} under {self.secrets.dir}")
        cluster_id = self.files.cluster_id()
        toolchain = Toolchain.prepare(self.settings.deploy_dir, self.settings.jars_dir, progress)
        for node_id in to_start:
            self.files.render(node_id)
            self.files.format(toolchain, node_id, cluster_id)
        procs = [self._spawn(toolchain, node_id) for node_id in to_start]
        for node_id, proc in zip(to_start, procs, strict=True):
            progress(
                f"started Kafka {toolchain.version} node {node_id} (pid {proc.pid}) on "
                f"{self.settings.host}:{self.settings.broker_port(node_id - 1)}"
            )
        try:
            info = self._wait_ready(list(zip(to_start, procs, strict=True)), progress, timeout)
        except BaseException:
            for proc in procs:
                _terminate([proc.pid], grace_s=10)
            raise
        progress(f"ready: {self._describe(info)}")
        return info

    def _describe(self, info: ClusterInfo) -> str:
        n = len(info.broker_ids)
        return f"{n} broker{'s' if n != 1 else ''} at {self.bootstrap}"

    def _check_ports(self, node_ids: list[int]) -> None:
        for node_id in node_ids:
            for port in (
                self.settings.broker_port(node_id - 1),
                self.settings.controller_port(node_id - 1),
                self.settings.mtls_port(node_id - 1),
                *(
                    [self.settings.plaintext_port + node_id - 1]
                    if self.settings.plaintext_port is not None
                    else []
                ),
            ):
                if not _port_free(self.settings.host, port):
                    raise LocalKafkaError(
                        f"port {port} on {self.settings.host} is in use by another process: "
                        "stop that process or set C2BUS_KAFKA_PORT to a free base port"
                    )

    def _heap_mb(self) -> int:
        if self.settings.heap_mb is not None:
            return self.settings.heap_mb
        return 512 if self.nodes == 1 else 384

    def _spawn(self, toolchain: Toolchain, node_id: int) -> subprocess.Popen[bytes]:
        node = self.node_dir(node_id)
        heap = self._heap_mb()
        log4j = self.settings.deploy_dir / "kafka" / "config" / "log4j2.yaml"
        cmd = [
            str(toolchain.java),
            f"-Xms{min(heap, 256)}m",
            f"-Xmx{heap}m",
            *_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={node / 'logs'}",
            "-cp",
            toolchain.classpath,
            "kafka.Kafka",
            str(self.properties_path(node_id)),
        ]
        with open(node / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=node,
                start_new_session=True,  # outlives the command that started it
            )
        (node / "pid").write_text(f"{proc.pid}\n", encoding="utf-8")
        _CHILDREN[proc.pid] = proc
        return proc

    def _wait_ready(
        self,
        started: list[tuple[int, subprocess.Popen[bytes]]],
        progress: Progress,
        timeout_s: float,
    ) -> ClusterInfo:
        begin = time.monotonic()
        deadline = begin + timeout_s
        next_report = begin + 5
        while True:
            for node_id, proc in started:
                if proc.poll() is not None:
                    raise LocalKafkaError(self._exit_cause(node_id, proc.returncode))
            try:
                info = asyncio.run(probe(self.client(), 3.0))
                if len(info.broker_ids) >= self.nodes:
                    return info
            except KafkaUnavailable:
                pass
            now = time.monotonic()
            if now >= deadline:
                raise LocalKafkaError(
                    f"Kafka did not answer at {self.bootstrap} within {timeout_s:g}s: see "
                    f"{self.dir}/node-*/logs/server.log (raise C2BUS_KAFKA_START_TIMEOUT_S on a "
                    "slow machine)"
                )
            if now >= next_report:
                progress(f"waiting for the broker to answer… {now - begin:.0f}s")
                next_report = now + 5
            time.sleep(0.5)

    def _exit_cause(self, node_id: int, code: int) -> str:
        node = self.node_dir(node_id)
        lines: list[str] = []
        for log in (node / "logs" / "server.log", node / "stdout.log"):
            with contextlib.suppress(OSError):
                lines += log.read_text(encoding="utf-8", errors="replace").splitlines()[-200:]
        for needle, cause in _CAUSES:
            if any(needle in ln for ln in lines):
                return f"Kafka node {node_id} exited during start: {cause} (see {node}/logs)"
        errors = [ln for ln in lines if " ERROR " in ln or "Exception" in ln]
        detail = errors[0].strip()[:300] if errors else f"exit status {code}"
        return f"Kafka node {node_id} exited during start: {detail} (see {node}/logs)"

    # --- stop -----------------------------------------------------------------------------

    def stop(self, progress: Progress = _noop, grace_s: float = 30.0) -> int:
        """SIGTERM every node (controlled shutdown), SIGKILL what outlives ``grace_s``.

        Returns how many processes were stopped.
        """
        pids = {node_id: self.pids(node_id) for node_id in self.node_ids()}
        every = [pid for found in pids.values() for pid in found]
        if not every:
            return 0
        begin = time.monotonic()
        killed = _terminate(every, grace_s)
        for node_id, found in pids.items():
            for pid in found:
                how = "killed after the grace period" if pid in killed else "stopped"
                progress(f"{how}: node {node_id} (pid {pid})")
            with contextlib.suppress(FileNotFoundError):
                (self.node_dir(node_id) / "pid").unlink()
        progress(f"local {self.nodes}-node Kafka stopped in {time.monotonic() - begin:.1f}s")
        return len(every)

    def kill_node(self, node_id: int, sig: signal.Signals = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to one node's process (fault tests); returns the pids signalled."""
        pids = self.pids(node_id)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            for pid in pids:
                while _alive(pid):
                    time.sleep(0.05)
        return pids

    def reset(self, progress: Progress = _noop) -> None:
        """Stop the nodes and delete all their data, logs and the cluster id."""
        self.stop(progress)
        if self.dir.exists():
            shutil.rmtree(self.dir)
            progress(f"removed {self.dir}")


def _terminate(pids: list[int], grace_s: float) -> set[int]:
    """SIGTERM ``pids``, SIGKILL those still alive after ``grace_s``; returns the killed."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _alive(pid)}
        if alive:
            time.sleep(0.2)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in alive:
        while _alive(pid):
            time.sleep(0.05)
    return alive


#: Broker processes this process started, by pid: they outlive the command that started
#: them, but while this process lives it holds them (and reaps them once they exit).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie; reaps our own children."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return state != "Z"
