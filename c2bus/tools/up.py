"""``c2bus up``: the whole system on one machine, supervised, stopped as one.

Starts the local broker unless one answers (or ``C2BUS_KAFKA_BOOTSTRAP`` is set), creates
the topics, then runs ingest, enforcer, gateway and the simulator as child processes
(``python -m c2bus.services.<name>``), each logging JSON to ``<home>/logs/<name>.log``. It waits
until each service's ``/readyz`` answers, prints where everything listens, and on Ctrl-C,
SIGTERM or a child's death stops the children (newest first), then a broker it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from c2bus.adapters.acls import grant
from c2bus.adapters.auth import LocalTokenKeys
from c2bus.adapters.kafka import probe
from c2bus.adapters.lifecycle import stop_on_signals
from c2bus.adapters.ops import answers
from c2bus.adapters.policy_store import latest_versions, publish
from c2bus.adapters.settings import (
    AuthSettings,
    KafkaSettings,
    LocalKafkaSettings,
    PrometheusSettings,
    ServiceSettings,
    SigningSettings,
)
from c2bus.adapters.signing import LocalKeys
from c2bus.adapters.topics import TopicNames, create_topics
from c2bus.core.policy.compiler import load_policy_document
from c2bus.errors import C2BusError, KafkaUnavailable
from c2bus.tools.localkafka import LocalCluster
from c2bus.tools.localkafka.storage import principals
from c2bus.tools.prometheus import LocalPrometheus, local_config

Progress = Callable[[str], None]
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0


@dataclass(frozen=True, slots=True)
class UpOptions:
    tracks: int = 50
    rate_hz: float = 1.0
    directive_every_s: float = 5.0
    simulator: bool = True
    #: start Prometheus (when installed) on the services, with deploy/prometheus's rules
    prometheus: bool = True


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    ready_url: str | None
    log: Path


def _home() -> Path:
    return LocalKafkaSettings.from_env().home


def _spawn(name: str, args: list[str], log_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "C2BUS_INSTANCE": f"{name}-1"},
        )
    return process, log


def _last_line(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:400]
    return "(no output)"


async def up(options: UpOptions, progress: Progress, stop: asyncio.Event) -> int:
    kafka = KafkaSettings.from_env()
    started_cluster: LocalCluster | None = None
    if not kafka.external:  # the local credentials exist before anything connects
        for made in LocalCluster(LocalKafkaSettings.from_env()).secrets.ensure(principals()):
            progress(f"created {made}")
    try:
        await probe(kafka, 3.0)
        progress(f"Kafka answers at {kafka.bootstrap}; using it")
    except KafkaUnavailable:
        if kafka.external:
            raise
        started_cluster = LocalCluster(LocalKafkaSettings.from_env(), nodes=1)
        await asyncio.to_thread(started_cluster.start, progress)
    children: list[Child] = []
    prometheus: LocalPrometheus | None = None
    try:
        await create_topics(kafka, kafka.topic_prefix, progress=progress)
        bindings = await grant(kafka, kafka.topic_prefix)
        progress(f"granted {len(bindings)} ACLs for {kafka.topic_prefix}. (deploy/kafka/acls.yaml)")
        await _ensure_policy(kafka, progress)
        _ensure_keys(progress)
        log_dir = _home() / "logs"
        names = ("enforcer", "ingest", "policy_api", "gateway")
        ports = {s: ServiceSettings.from_env(s).port for s in names}
        gateway = ServiceSettings.from_env("gateway")
        ports["gateway_ops"] = gateway.gateway.ops_port  # its metrics, apart from consoles
        host = gateway.host
        for name in names:
            process, log = _spawn(name, [f"c2bus.services.{name}"], log_dir)
            children.append(Child(name, process, f"http://{host}:{ports[name]}/readyz", log))
            progress(f"started {name} (pid {process.pid}), logs in {log}")
        await _wait_ready(children, progress)
        if options.prometheus:
            prometheus = await _start_prometheus(host, ports, progress)
        if options.simulator:
            args = [
                "c2bus.tools.simulator",
                "--tracks", str(options.tracks),
                "--rate", str(options.rate_hz),
                "--directive-every", str(options.directive_every_s),
                "--posts", f"ws://{host}:{ports['gateway']}",
            ]  # fmt: skip
            process, log = _spawn("simulator", args, log_dir)
            children.append(Child("simulator", process, None, log))
            progress(f"started simulator (pid {process.pid}), logs in {log}")
        _summary(
            kafka=kafka,
            cluster=started_cluster,
            host=host,
            ports=ports,
            options=options,
            log_dir=log_dir,
            prometheus=prometheus,
        )
        return await _supervise(children, stop, progress)
    finally:
        try:
            if prometheus is not None:
                await asyncio.to_thread(prometheus.stop)
                progress("stopped prometheus")
            await asyncio.to_thread(_stop_children, children, progress)
        finally:
            if started_cluster is not None:
                await asyncio.to_thread(started_cluster.stop, progress)


def _ensure_keys(progress: Progress) -> None:
    """The local token keys and record-signing keys, made before the services start (so that
    none of them has to make one)."""
    auth = AuthSettings.from_env()
    if auth.local:
        for name in LocalTokenKeys(auth.dir).ensure():
            progress(f"made the token key of {name} in {auth.dir}")
    signing = SigningSettings.from_env()
    if signing.local:
        for name in LocalKeys(signing.dir).ensure():
            progress(f"made the signing key of {name} in {signing.dir}")


async def _ensure_policy(kafka: KafkaSettings, progress: Progress) -> None:
    """Publish the configured policy file as version 1 unless a version is already out."""
    settings = ServiceSettings.from_env("enforcer")
    topic = TopicNames(kafka.topic_prefix).policy
    current = (await latest_versions(kafka, topic)).get(settings.policy_set_id)
    if current is not None:
        progress(f"policy {settings.policy_set_id} version {current.data.version} is in force")
        return
    doc = load_policy_document(settings.policy_file.read_bytes())
    if doc.policy_set_id != settings.policy_set_id:
        raise C2BusError(
            f"{settings.policy_file} holds policy set {doc.policy_set_id}, but the enforcer "
            f"follows {settings.policy_set_id} (C2BUS_POLICY_SET)"
        )
    await publish(kafka, topic, doc, None, "urn:c2bus:up")
    progress(
        f"published policy {doc.policy_set_id} version {doc.version} from {settings.policy_file}"
    )


async def _start_prometheus(
    host: str, ports: dict[str, int], progress: Progress
) -> LocalPrometheus | None:
    if LocalPrometheus.binary() is None:
        progress("Prometheus is not installed (make prometheus installs it): not started")
        return None
    settings = PrometheusSettings.from_env()
    config = local_config(host, ports, settings.port, scrape_interval_s=settings.scrape_interval_s)
    prometheus = LocalPrometheus(_home(), host, settings.port, config)
    await asyncio.to_thread(prometheus.start, progress)
    return prometheus


async def _wait_ready(children: list[Child], progress: Progress) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = [c for c in children if c.ready_url]
    while pending:
        for child in list(pending):
            if child.process.poll() is not None:
                raise C2BusError(
                    f"{child.name} exited during start (status {child.process.returncode}): "
                    f"{_last_line(child.log)}"
                )
            assert child.ready_url is not None
            if await asyncio.to_thread(answers, child.ready_url):
                progress(f"{child.name} is ready")
                pending.remove(child)
        if pending and time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            raise C2BusError(f"not ready after {READY_TIMEOUT_S:g}s: {names} (see their logs)")
        await asyncio.sleep(0.3)


def _summary(
    *,
    kafka: KafkaSettings,
    cluster: LocalCluster | None,
    host: str,
    ports: dict[str, int],
    options: UpOptions,
    log_dir: Path,
    prometheus: LocalPrometheus | None,
) -> None:
    origin = "started by c2bus up" if cluster else "already running"
    c2bus = Path(sys.executable).with_name("c2bus")
    command = str(c2bus) if c2bus.exists() else "c2bus"
    lines = [
        "",
        "c2bus is up:",
        f"  Kafka      {kafka.bootstrap} ({origin}); topics under '{kafka.topic_prefix}.'",
        f"  ingest     http://{host}:{ports['ingest']}  (OpenAPI: http://{host}:{ports['ingest']}/docs)",
        f"  enforcer   http://{host}:{ports['enforcer']}/metrics",
        f"  policy API http://{host}:{ports['policy_api']}/docs",
        f"  gateway    ws://{host}:{ports['gateway']}  (subprotocol c2bus.v1; metrics: "
        f"http://{host}:{ports['gateway_ops']}/metrics)",
    ]
    if options.simulator:
        lines.append(
            f"  simulator  {options.tracks} tracks at {options.rate_hz:g} Hz, "
            f"a directive every {options.directive_every_s:g}s, a command post per unit "
            "acknowledging its directives"
        )
    if prometheus is not None:
        lines.append(f"  prometheus {prometheus.url}  (alerts: {prometheus.url}/alerts)")
    lines += [
        f"  logs       {log_dir}/",
        "",
        "Connect a console (another terminal):",
        f"  {command} console",
        "Or mint a token for your own client:",
        f"  {command} token --unit MNC-NE --nation POL --clearance 'NATO SECRET'",
        "Ctrl-C stops everything.",
        "",
    ]
    with contextlib.suppress(OSError):
        print("\n".join(lines), flush=True)  # noqa: T201 (the summary is the command's output)


async def _supervise(children: list[Child], stop: asyncio.Event, progress: Progress) -> int:
    while not stop.is_set():
        for child in children:
            code = child.process.poll()
            if code is not None:
                progress(
                    f"{child.name} exited with status {code}: {_last_line(child.log)}; "
                    "stopping everything"
                )
                return 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()
    progress("stopping…")
    return 0


def _stop_children(children: list[Child], progress: Progress) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(STOP_GRACE_S)
                progress(f"stopped {child.name}")
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
                progress(f"killed {child.name} after {STOP_GRACE_S:g}s")


def run_up(options: UpOptions, progress: Progress) -> int:
    async def main() -> int:
        return await up(options, progress, stop_on_signals())

    return asyncio.run(main())
