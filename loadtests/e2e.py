"""End-to-end benchmarks: real processes, real Kafka, real WebSocket consoles.

Three scenarios of the harness (``python -m loadtests --only sa-e2e,directive-e2e,pipeline``),
each on topics under a fresh prefix of the bench broker with the reference policy published,
a gateway process (``python -m c2bus.services.gateway``) and the consoles in a process of their
own (``loadtests.e2e_clients``) so that the measuring clients do not take the gateway's
event loop. The load comes from a task of this process, with the project's producer
(idempotent, ``acks=all``, linger 5 ms, as ingest uses it). All times are wall-clock times
of the one machine, so the producer's send stamps and the consoles' receive stamps compare.

- **SA end to end** (``sa_scenario``): 2,000 track events/s for 10 s (quick: 3 s) after a
  1 s warm-up, each event's ``time`` stamped at its send; 100 consoles subscribed to ``sa``,
  10 per sector of the simulator's box (10 longitude strips), so that each event reaches
  the 10 consoles of its sector (20,000 deliveries/s). Per event, the latency is from its
  send to the moment the last of its consoles read it. Baseline: Kafka's own
  ``EndToEndLatency`` (``acks=all``, records of our SA events' mean size) on the same
  broker. Goal: our p99 <= 2 x the broker's p99 + 10 ms. The gateway's event-age histogram
  (event time to queued for consoles) is read before and after, to tell the share of the
  way up to the gateway from the share after it.
- **Directive end to end** (``directive_scenario``): directives (about 70 % allowed, 30 %
  denied, checked against the policy when made) written straight to
  ``<prefix>.directives.submitted`` at 200/s for 10 s (quick: 3 s), decided by an enforcer
  process (exactly once, a transaction per partition and commit window), fanned out by the
  gateway to a console of every target unit. Latency of each allowed directive: from its
  send to its target unit's console reading it; a ``read_committed`` reader here stamps
  when it becomes readable on the approved topic (the enforcer's share). Goal: p99 <= the
  enforcer's commit interval + 30 ms.
- **Whole pipeline** (``pipeline_scenario``): the SA set-up with one console per strip (10
  consoles, each event to one: the rate the pipeline carries, not fan-out), the rate
  stepped from 1,000/s (doubling while it holds, halving while it does not, then halving the
  gap twice) until producer -> console p99 reaches 100 ms, events go missing or the
  producer cannot keep the pace. Figure: the highest rate that held, against Kafka's
  ``ProducerPerformance`` (unthrottled, ``acks=all``, same record size) on the same broker.
  No goal: the ratio is reported.

Every process started here is stopped at the end of its scenario (SIGTERM, then SIGKILL);
the console process also exits by itself when its stdin closes or its time is up, the Java
tools when their records are done (or are killed at a timeout). The gateways' logs are kept
in ``.c2bus/bench/e2e/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from c2bus.adapters.acls import grant
from c2bus.adapters.auth import LOCAL_ISSUER, LocalTokenKeys
from c2bus.adapters.kafka import (
    assign_all,
    java_client_config,
    new_consumer,
    new_producer,
    start_client,
    start_clients,
)
from c2bus.adapters.ops import answers
from c2bus.adapters.policy_store import publish
from c2bus.adapters.settings import (
    EnforcerSettings,
    KafkaSettings,
    LocalKafkaSettings,
    project_root,
)
from c2bus.adapters.topics import TopicNames, create_topics
from c2bus.core.codec import encode_event
from c2bus.core.events import Verdict
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.core.policy.compiler import compile_policy, load_policy_document
from c2bus.core.policy.evaluator import PolicyEvaluator
from c2bus.core.protocol import Area
from c2bus.tools.localkafka.secrets import write_secret
from c2bus.tools.localkafka.toolchain import Toolchain
from c2bus.tools.simulator.model import (
    DEFAULT_BOX,
    initial_tracks,
    next_directive,
    step,
    track_event,
)

from .core import Bench, Result
from .enforcer_txn import Enforcer, UnsignedEnforcer

ROOT = project_root()
POLICY = ROOT / "deploy" / "policies" / "alliance.yaml"
LOG_DIR = ROOT / ".c2bus" / "bench" / "e2e"  # the gateways' logs of the last runs
AUDIENCE, ISSUER = "c2bus", "c2bus-local"  # the gateway's defaults
SOURCE = "urn:c2bus-bench:e2e"
# Consoles see everything by label: the highest clearance, a NATO nation that national
# (DEU-only) SA is released to as well. What narrows their view is the area of interest.
NATION, CLEARANCE = "DEU", Classification.COSMIC_TOP_SECRET

SA_RATE = 2_000  # events/s
SECTORS = 10  # longitude strips of the simulator's box
PER_SECTOR = 10  # consoles per strip: each SA event reaches this many consoles
PIPELINE_PER_SECTOR = 1  # the pipeline's consoles per strip: its rate, not fan-out
TRACKS = 2_000  # simulated tracks, reported round-robin
DIRECTIVE_RATE = 200  # directives/s
PIPELINE_P99_MS = 100.0
PACE_KEPT = 0.95  # the producer kept the pace if it sent at >= 95 % of the rate asked


# --- set-up: topics, policy, key, processes ----------------------------------------------------


@dataclass
class Deployment:
    """One scenario's world: its topics under a fresh prefix, the policy published on them,
    and the token keys its gateway checks (EdDSA, as local deployments mint them)."""

    kafka: KafkaSettings
    topics: TopicNames
    tokens: LocalTokenKeys

    @classmethod
    async def create(cls, kafka: KafkaSettings, tag: str, workdir: Path) -> Deployment:
        prefix = f"e2e{tag}{secrets.token_hex(3)}"
        await create_topics(kafka, prefix)
        await grant(kafka, prefix)
        topics = TopicNames(prefix)
        doc = load_policy_document(POLICY.read_bytes())
        await publish(kafka, topics.policy, doc, None, SOURCE)
        tokens = LocalTokenKeys(workdir / f"{prefix}-tokens")
        tokens.ensure()
        return cls(kafka, topics, tokens)

    def token(self, subject: str, unit: str) -> str:
        identity = Identity(subject, NATION, CLEARANCE, unit, frozenset({"console"}))
        return self.tokens.mint(
            LOCAL_ISSUER, identity, audience=AUDIENCE, issuer=ISSUER, ttl_s=3600
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _stop(process: asyncio.subprocess.Process, grace_s: float = 30.0) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class GatewayPorts(NamedTuple):
    console: int
    ops: int  # metrics


@contextlib.asynccontextmanager
async def gateway(
    world: Deployment, module: str = "c2bus.services.gateway"
) -> AsyncIterator[GatewayPorts]:
    """``python -m c2bus.services.gateway`` (or the bench's ``module`` in its place) on free
    ports; yields them once ``/readyz`` says ready, SIGTERM at the end (SIGKILL if it has
    not stopped within 30 s)."""
    port, ops = _free_port(), _free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{world.topics.prefix}-gateway.log"
    env = {
        **os.environ,
        **world.kafka.environment(),
        "C2BUS_TOPIC_PREFIX": world.topics.prefix,
        "C2BUS_JWT_DIR": str(world.tokens.dir),
        "C2BUS_GATEWAY_PORT": str(port),
        "C2BUS_GATEWAY_OPS_PORT": str(ops),
        "C2BUS_INSTANCE": f"bench-{world.topics.prefix}",
        "C2BUS_SHUTDOWN_TIMEOUT_S": "5",
    }
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            async with asyncio.timeout(60):
                while not await asyncio.to_thread(answers, f"http://127.0.0.1:{port}/readyz"):
                    if process.returncode is not None:
                        tail = log_path.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"the gateway exited ({process.returncode}): {tail}")
                    await asyncio.sleep(0.2)
            yield GatewayPorts(port, ops)
        finally:
            await _stop(process)


@dataclass
class Report:
    """What the consoles read: per event id, (console index, receive time) of each copy."""

    received: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    closed: dict[int, int] = field(default_factory=dict)  # console index -> close code

    def merge(self, doc: dict[str, Any]) -> None:
        for ident, copies in doc["received"].items():
            self.received.setdefault(ident, []).extend((int(c), float(t)) for c, t in copies)
        self.closed.update({int(c): int(code) for c, code in doc["closed"].items()})

    def add(self, other: Report) -> None:
        for ident, copies in other.received.items():
            self.received.setdefault(ident, []).extend(copies)
        self.closed.update(other.closed)


class Consoles:
    """The console process, driven over its stdin and stdout (see ``e2e_clients``)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def _ask(self, command: bytes, timeout_s: float = 60.0) -> bytes:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"the console process ended ({self.process.returncode})")
        return line

    async def frames(self) -> int:
        """Event frames read so far, by every console together."""
        return int(await self._ask(b"count"))

    async def report(self) -> Report:
        """The receipts since the last report."""
        report = Report()
        report.merge(orjson.loads(await self._ask(b"report")))
        return report

    async def settle(self, total: int, quiet_s: float = 2.0, limit_s: float = 30.0) -> int:
        """Wait until ``total`` event frames have been read (or none for ``quiet_s``, or
        ``limit_s`` in all); returns the count. Only a counter is asked for meanwhile, so
        the consoles' reading is not held up by the report."""
        deadline = time.monotonic() + limit_s
        count, changed = await self.frames(), time.monotonic()
        while count < total and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            now_count = await self.frames()
            if now_count != count:
                count, changed = now_count, time.monotonic()
            elif time.monotonic() - changed >= quiet_s:
                break
        return count


@contextlib.asynccontextmanager
async def consoles(
    port: int, specs: list[dict[str, Any]], max_seconds: float
) -> AsyncIterator[Consoles]:
    """The consoles connected, subscribed and live; the process stops at the end (and by
    itself after ``max_seconds``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtests.e2e_clients",
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        limit=1 << 30,  # a report is one (long) line
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        spec = {"port": port, "max_seconds": max_seconds, "consoles": specs}
        process.stdin.write(orjson.dumps(spec) + b"\n")
        await process.stdin.drain()
        line = await asyncio.wait_for(process.stdout.readline(), 180)
        if line.strip() != b"ready":
            raise RuntimeError(f"the consoles did not all go live ({line[:300]!r})")
        yield Consoles(process)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ConnectionError):
                process.stdin.write(b"stop\n")
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                await _stop(process, 5)


def sectors(count: int, box: tuple[float, ...] = DEFAULT_BOX) -> list[Area]:
    """The box cut into ``count`` strips of longitude, west to east."""
    south, west, north, east = box
    width = (east - west) / count
    return [
        Area(
            south=south,
            west=round(west + i * width, 6),
            north=north,
            east=east if i == count - 1 else round(west + (i + 1) * width, 6),
        )
        for i in range(count)
    ]


def sa_consoles(world: Deployment, areas: list[Area], per_area: int) -> list[dict[str, Any]]:
    out = []
    for s, area in enumerate(areas):
        for n in range(per_area):
            subscribe = {
                "id": "s",
                "streams": ["sa"],
                "snapshot": False,
                "area": {
                    "south": area.south,
                    "west": area.west,
                    "north": area.north,
                    "east": area.east,
                },
            }
            out.append(
                {"token": world.token(f"bench-sa-{s}-{n}", "JFC-BRUNSSUM"), "subscribe": subscribe}
            )
    return out


# --- load ------------------------------------------------------------------------------------


class TrackFeed:
    """Simulated tracks reported round-robin, each moved for the time since its last
    report; every event's ``time`` is the moment it is made and sent."""

    def __init__(self, count: int, seed: int = 11) -> None:
        self.tracks = initial_tracks(count, random.Random(seed))
        now = time.time()
        self.stamps = [now] * count
        self.turn = 0
        self.seq = 0

    def event(self, now: float) -> tuple[bytes, bytes, str, float, float]:
        """(key, value, id, lat, lon) of the next report, stamped ``now``."""
        i = self.turn
        self.turn = (i + 1) % len(self.tracks)
        track = step(self.tracks[i], now - self.stamps[i])
        if round(track.course_deg, 1) >= 360.0:  # track_event would round it to 360.0,
            track = replace(track, course_deg=0.0)  # which the contract refuses
        self.tracks[i], self.stamps[i] = track, now
        event = track_event(track, datetime.fromtimestamp(now, UTC), SOURCE, self.seq)
        self.seq += 1
        point = event.data.position
        return track.track_id.encode(), encode_event(event), event.id, point.lat, point.lon


@dataclass
class Sent:
    """What a paced run sent: (event id, send time, consoles it is for) per event."""

    events: list[tuple[str, float, int]]
    seconds: float  # from the first send to the last

    @property
    def rate(self) -> float:
        return (len(self.events) - 1) / self.seconds if self.seconds > 0 else 0.0


async def paced(
    rate: float, seconds: float, send: Callable[[int, float], Awaitable[None]]
) -> float:
    """Call ``send(i, now)`` ``rate`` times a second for ``seconds``: every call whose time
    has come goes at once, then the loop sleeps until the next one is due. Returns the time
    from the first call to the last (longer than planned when the pace was not kept)."""
    total = max(2, int(rate * seconds))
    begin = last = time.monotonic()
    i = 0
    while i < total:
        due = min(total, int((time.monotonic() - begin) * rate) + 1)
        while i < due:
            await send(i, time.time())
            i += 1
        last = time.monotonic()
        ahead = begin + i / rate - last
        if ahead > 0 and i < total:
            await asyncio.sleep(ahead)
    return last - begin


@dataclass
class Latencies:
    """Latencies (ms, sorted) and how many events did not reach every console they were for."""

    samples: list[float]
    missing: int

    def p(self, q: float) -> float:
        """The ``q``-th percentile (nearest rank)."""
        if not self.samples:
            return math.nan
        rank = math.ceil(q / 100 * len(self.samples))
        return self.samples[min(len(self.samples), max(1, rank)) - 1]

    def text(self) -> str:
        return f"p50 {self.p(50):.1f} / p95 {self.p(95):.1f} / p99 {self.p(99):.1f} ms"

    def figures(self) -> dict[str, float]:
        return {
            "p50_ms": self.p(50),
            "p95_ms": self.p(95),
            "p99_ms": self.p(99),
            "max_ms": self.samples[-1] if self.samples else math.nan,
            "missing": self.missing,
        }


def last_console(sent: Sent, report: Report) -> Latencies:
    """Per event: from its send to the last of its consoles reading it."""
    samples, missing = [], 0
    for ident, at, wanted in sent.events:
        copies = report.received.get(ident, [])
        if len({c for c, _ in copies}) < wanted:
            missing += 1
            continue
        samples.append((max(t for _, t in copies) - at) * 1000)
    samples.sort()
    return Latencies(samples, missing)


@dataclass
class SaStep:
    """One paced SA run at ``rate``, measured."""

    rate: float
    sent: Sent
    latencies: Latencies
    closed: dict[int, int]
    #: the gateway's own view: event time to the moment it queued the event for its
    #: consoles (``c2bus_gateway_event_age_seconds``), as histogram counts by bucket bound
    queued: dict[float, float] = field(default_factory=dict)

    def queued_text(self) -> str:
        """Bucket bounds (ms) holding the p50 and p99 of the gateway's queueing age."""
        p50, p99 = bucket_quantile(self.queued, 0.5), bucket_quantile(self.queued, 0.99)
        return f"p50 <= {p50 * 1000:g} ms, p99 <= {p99 * 1000:g} ms"

    def holds(self) -> bool:
        return (
            self.latencies.p(99) < PIPELINE_P99_MS
            and self.latencies.missing == 0
            and not self.closed
            and self.sent.rate >= PACE_KEPT * self.rate
        )

    def summary(self) -> str:
        text = f"{self.rate:,.0f}/s asked, {self.sent.rate:,.0f}/s sent, {self.latencies.text()}"
        text += f" (queued at the gateway: {self.queued_text()})"
        if self.latencies.missing:
            text += f", {self.latencies.missing} events not at every console"
        if self.closed:
            text += f", {len(self.closed)} consoles closed ({sorted(set(self.closed.values()))})"
        return text


@dataclass
class SaRig:
    """The SA set-up, running: a gateway's consoles, a producer, the tracks."""

    world: Deployment
    ops_port: int  # the gateway's metrics
    clients: Consoles
    producer: AIOKafkaProducer
    areas: list[Area]
    per_area: int
    feed: TrackFeed = field(default_factory=lambda: TrackFeed(TRACKS))

    def consoles_for(self, lat: float, lon: float) -> int:
        return self.per_area * sum(area.contains(lat, lon) for area in self.areas)

    async def produce(self, rate: float, seconds: float) -> Sent:
        events: list[tuple[str, float, int]] = []
        topic = self.world.topics.sa

        async def send(_: int, now: float) -> None:
            key, value, ident, lat, lon = self.feed.event(now)
            await self.producer.send(topic, value, key=key)
            events.append((ident, now, self.consoles_for(lat, lon)))

        elapsed = await paced(rate, seconds, send)
        await self.producer.flush()
        return Sent(events, elapsed)

    async def step(self, rate: float, seconds: float) -> SaStep:
        """One paced run, its tail waited for, measured producer -> last console."""
        before = await self.clients.frames()
        ages = await asyncio.to_thread(event_ages, self.ops_port)
        sent = await self.produce(rate, seconds)
        await self.clients.settle(before + sum(wanted for *_, wanted in sent.events))
        report = await self.clients.report()
        after = await asyncio.to_thread(event_ages, self.ops_port)
        queued = {bound: after[bound] - ages.get(bound, 0.0) for bound in after}
        return SaStep(rate, sent, last_console(sent, report), report.closed, queued)


_AGE_BUCKET = re.compile(
    r'^c2bus_gateway_event_age_seconds_bucket\{le="([^"]+)",stream="sa"\} (\S+)$', re.M
)


def event_ages(port: int) -> dict[float, float]:
    """The gateway's SA event-age histogram: cumulative count by bucket bound (s)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {float(le): float(count) for le, count in _AGE_BUCKET.findall(text)}


def bucket_quantile(cumulative: dict[float, float], q: float) -> float:
    """The bound of the first bucket holding the ``q`` quantile (inf if none, nan if empty)."""
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    return next(b for b in bounds if cumulative[b] >= q * total)


@contextlib.asynccontextmanager
async def sa_rig(
    bench: Bench, kafka: KafkaSettings, tag: str, per_area: int, max_seconds: float
) -> AsyncIterator[SaRig]:
    """Topics, a gateway process, SA consoles (``per_area`` per sector) and a producer."""
    with tempfile.TemporaryDirectory(prefix="c2bus-e2e-") as workdir:
        world = await Deployment.create(kafka, tag, Path(workdir))
        areas = sectors(SECTORS)
        bench.say(f"topics under {world.topics.prefix}; starting the gateway")
        async with gateway(world) as (port, ops_port):
            specs = sa_consoles(world, areas, per_area)
            bench.say(f"gateway ready on :{port}; connecting {len(specs)} consoles")
            async with consoles(port, specs, max_seconds) as clients:
                # the project's producer as ingest runs it (idempotent, acks=all, linger 5 ms)
                producer = new_producer(kafka, f"bench-{world.topics.prefix}")
                await start_client(producer, kafka)
                try:
                    yield SaRig(world, ops_port, clients, producer, areas, per_area)
                finally:
                    await producer.stop()


def mean_sa_size(count: int = 2_000) -> int:
    """The mean size in bytes of our SA track events (the baselines' record size)."""
    feed = TrackFeed(count, seed=3)
    now = time.time()
    return round(statistics.fmean(len(feed.event(now)[1]) for _ in range(count)))


# --- Kafka's own tools (the baselines) -------------------------------------------------------


def kafka_tool(bench: Bench, main: str, args: list[str], timeout_s: float) -> str:
    """Run one of Kafka's tools from the project's jars; its standard output."""
    settings = LocalKafkaSettings.from_env()
    tools = Toolchain.prepare(settings.deploy_dir, settings.jars_dir, bench.say)
    command = [str(tools.java), "-Xmx512m", "-cp", tools.classpath, main, *args]
    out = subprocess.run(  # killed on timeout
        command, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=ROOT
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"{main} failed ({out.returncode}): {(out.stderr or out.stdout)[-1500:]}"
        )
    return out.stdout


async def baseline_topic(kafka: KafkaSettings, tag: str) -> str:
    """A fresh topic laid out as our SA topic (partitions, configuration)."""
    prefix = f"e2e{tag}{secrets.token_hex(3)}"
    await create_topics(kafka, prefix)  # the tools run as the admin: no grants needed
    return TopicNames(prefix).sa


_PERCENTILES = re.compile(r"50th = (\d+), 99th = (\d+), 99\.9th = (\d+)")
_AVERAGE = re.compile(r"Avg latency: ([\d.]+) ms")


def java_config(bench: Bench, kafka: KafkaSettings) -> Path:
    """A client configuration file for Kafka's own tools (the admin's credentials, 0600)."""
    path = bench.workdir() / "java-client.properties"
    lines = "".join(f"{k}={v}\n" for k, v in java_client_config(kafka).items())
    write_secret(path, lines.encode())
    return path


def end_to_end_latency(bench: Bench, records: int, size: int) -> dict[str, float]:
    """Kafka's ``EndToEndLatency``: one record at a time, produced (``acks=all``) and
    consumed back; its average and percentiles (whole milliseconds, as it prints them)."""
    kafka = bench.kafka()
    topic = asyncio.run(baseline_topic(kafka, "lat"))
    bench.say(f"baseline: EndToEndLatency, {records:,} records of {size} bytes, acks=all")
    args = ["--bootstrap-server", kafka.bootstrap, "--topic", topic]
    args += ["--num-records", str(records), "--producer-acks", "all", "--record-size", str(size)]
    args += ["--command-config", str(java_config(bench, kafka))]
    out = kafka_tool(bench, "org.apache.kafka.tools.EndToEndLatency", args, 600)
    found, average = _PERCENTILES.search(out), _AVERAGE.search(out)
    if found is None or average is None:
        raise RuntimeError(f"EndToEndLatency printed no percentiles: {out[-1000:]}")
    p50, p99, p999 = (float(v) for v in found.groups())
    return {"avg": float(average.group(1)), "p50": p50, "p99": p99, "p99.9": p999}


_THROUGHPUT = re.compile(r"(\d+) records sent, ([\d.]+) records/sec")


def producer_performance(bench: Bench, records: int, size: int) -> float:
    """Kafka's ``ProducerPerformance`` unthrottled (``acks=all``): records/s."""
    kafka = bench.kafka()
    topic = asyncio.run(baseline_topic(kafka, "perf"))
    bench.say(f"baseline: ProducerPerformance, {records:,} records of {size} bytes, acks=all")
    args = ["--bootstrap-server", kafka.bootstrap, "--topic", topic]
    args += ["--num-records", str(records), "--record-size", str(size), "--throughput", "-1"]
    args += ["--command-config", str(java_config(bench, kafka))]
    args += ["--command-property", "acks=all"]
    out = kafka_tool(bench, "org.apache.kafka.tools.ProducerPerformance", args, 600)
    summary = [m for m in _THROUGHPUT.finditer(out) if int(m.group(1)) == records]
    if not summary:
        raise RuntimeError(f"ProducerPerformance printed no summary: {out[-1000:]}")
    return float(summary[-1].group(2))


# --- 1. SA end to end ----------------------------------------------------------------------


def sa_scenario(bench: Bench) -> list[Result]:
    seconds = 3.0 if bench.quick else 10.0
    size = mean_sa_size()
    kafka = bench.kafka()  # (not inside the event loop: it runs one of its own)

    async def run() -> SaStep:
        async with sa_rig(bench, kafka, "sa", PER_SECTOR, 300 + seconds) as rig:
            bench.say(f"warm-up: {SA_RATE:,}/s for 1 s")
            await rig.step(SA_RATE, 1.0)
            bench.say(f"measuring: {SA_RATE:,} events/s for {seconds:g} s")
            result = await rig.step(SA_RATE, seconds)
            bench.say(result.summary())
            return result

    ours = asyncio.run(run())
    broker = end_to_end_latency(bench, 1_000 if bench.quick else 5_000, size)
    bench.say(f"broker: p50 {broker['p50']:g} / p99 {broker['p99']:g} ms")
    lat = ours.latencies
    bound = 2 * broker["p99"] + 10
    ratio = lat.p(99) / bound
    events = len(ours.sent.events)
    consoles_n = SECTORS * PER_SECTOR
    detail = (
        f"{events:,} SA track events ({size} bytes on average) produced at "
        f"{ours.sent.rate:,.0f}/s (asked {SA_RATE:,}/s; the project's producer: acks=all, "
        f"linger 5 ms) after a 1 s warm-up; one gateway process; {consoles_n} consoles in a "
        f"separate process, each "
        f"with an area of interest: the simulator's box cut into {SECTORS} longitude strips, "
        f"{PER_SECTOR} consoles per strip, so each event reaches {PER_SECTOR} consoles "
        f"({SA_RATE * PER_SECTOR:,} deliveries/s; all {SA_RATE * consoles_n:,}/s would be "
        f"beyond one Python gateway on 2 cores). Latency: from the event's time (stamped at "
        f"its send) to the last of its consoles reading it; the gateway's own event-age "
        f"histogram (event time to queued for its consoles) had {ours.queued_text()}. "
        f"Events not at every console: "
        f"{lat.missing}; consoles closed: {len(ours.closed)}. Baseline: Kafka EndToEndLatency "
        f"on the same broker (acks=all, {size}-byte records one at a time, whole ms as it "
        f"prints them): avg {broker['avg']:.2f}, p50 {broker['p50']:g}, p99 {broker['p99']:g}, "
        f"p99.9 {broker['p99.9']:g} ms; bound 2 x p99 + 10 = {bound:g} ms."
    )
    figures = lat.figures() | {
        "events": events,
        "sent_per_s": ours.sent.rate,
        "consoles_closed": len(ours.closed),
        "record_bytes": size,
        "broker_avg_ms": broker["avg"],
        "broker_p50_ms": broker["p50"],
        "broker_p99_ms": broker["p99"],
        "broker_p999_ms": broker["p99.9"],
        "bound_ms": bound,
    }
    return [
        Result(
            scenario=f"SA end to end, {SA_RATE:,}/s, {consoles_n} consoles",
            ours=lat.text(),
            baseline=f"Kafka EndToEndLatency p50 {broker['p50']:g} / p99 {broker['p99']:g} ms",
            ratio=ratio,
            ratio_label="of 2 x broker p99 + 10 ms",
            goal=f"p99 <= 2 x broker p99 + 10 ms (each event to {PER_SECTOR} consoles by area)",
            met=ratio <= 1 and lat.missing == 0 and not ours.closed,
            figures=figures,
            detail=detail,
            samples={"c2bus SA, producer → last console": lat.samples},
        )
    ]


# --- 2. directive end to end ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Planned:
    """A directive to send, and whether the policy allows it."""

    id: str
    key: bytes
    value: bytes
    target: str
    allowed: bool


def plan_directives(count: int, seed: int = 5) -> list[Planned]:
    """Directives the policy allows or denies (none held), each checked when made."""
    evaluator = PolicyEvaluator(compile_policy(load_policy_document(POLICY.read_bytes())))
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for seq in range(count):
        event = next_directive(evaluator, rng, now, SOURCE, seq, hold_ratio=0.0)
        allowed = evaluator.decide(event, now).verdict is Verdict.ALLOW
        target = event.data.target
        out.append(Planned(event.id, target.encode(), encode_event(event), target, allowed))
    return out


@dataclass
class DirectiveRun:
    """Directives through an enforcer and a gateway to a console of each target unit."""

    bench: Bench
    kafka: KafkaSettings
    plan: list[Planned]
    warm: int  # the first ``warm`` of the plan warm up, sent at once and not measured
    seconds: float
    interval_ms: int
    #: False: the enforcer signs nothing and the gateway checks nothing (the baseline of
    #: what signing costs, ``loadtests/unsigned_*.py``)
    signed: bool = True
    targets: list[str] = field(init=False)
    sent: dict[str, float] = field(default_factory=dict)
    report: Report = field(default_factory=Report)
    #: when a read_committed reader (as the gateway reads) first saw each approved directive
    visible: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0

    def __post_init__(self) -> None:
        self.targets = sorted({d.target for d in self.plan if d.allowed})

    @property
    def measured(self) -> list[Planned]:
        return self.plan[self.warm :]

    def at_target(self, report: Report, directive: Planned) -> list[float]:
        console = self.targets.index(directive.target)
        return [t for c, t in report.received.get(directive.id, ()) if c == console]

    async def collect(self, clients: Consoles, wanted: list[Planned], limit_s: float) -> Report:
        """Receipts, until each wanted directive is at its target's console (or the limit)."""
        report = Report()
        deadline = time.monotonic() + limit_s
        while True:
            report.add(await clients.report())
            if all(self.at_target(report, d) for d in wanted) or time.monotonic() > deadline:
                return report
            await asyncio.sleep(0.25)

    async def run(self) -> None:
        kafka = self.kafka
        with tempfile.TemporaryDirectory(prefix="c2bus-e2e-") as workdir:
            world = await Deployment.create(kafka, "dir", Path(workdir))
            self.bench.say(f"topics under {world.topics.prefix}; starting enforcer and gateway")
            enforcer = Enforcer if self.signed else UnsignedEnforcer
            module = "c2bus.services.gateway" if self.signed else "loadtests.unsigned_gateway"
            with enforcer(kafka, world.topics.prefix, True, self.interval_ms):
                async with gateway(world, module) as (port, _):
                    subscribe = {"id": "s", "streams": ["directives"], "snapshot": False}
                    specs = [
                        {
                            "token": world.token(f"bench-{unit.lower()}", unit),
                            "subscribe": subscribe,
                        }
                        for unit in self.targets
                    ]
                    self.bench.say(f"gateway on :{port}; {len(specs)} consoles, one per target")
                    async with consoles(port, specs, 300 + self.seconds) as clients:
                        producer = new_producer(kafka, f"bench-{world.topics.prefix}")
                        observer = new_consumer(kafka, "bench-observer", group_id=None)
                        await start_clients(kafka, producer, observer)
                        watching = asyncio.create_task(self._watch(observer, world))
                        try:
                            await self._load(world, clients, producer)
                        finally:
                            watching.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await watching
                            await observer.stop()
                            await producer.stop()

    async def _watch(self, observer: AIOKafkaConsumer, world: Deployment) -> None:
        """Stamp each approved directive when a read_committed reader gets it."""
        await assign_all(observer, self.kafka, [world.topics.approved])
        while True:
            batch = await observer.getmany(timeout_ms=200)
            now = time.time()
            for records in batch.values():
                for record in records:
                    self.visible.setdefault(str(orjson.loads(record.value)["id"]), now)

    async def _load(self, world: Deployment, clients: Consoles, producer: AIOKafkaProducer) -> None:
        topic = world.topics.submitted
        self.bench.say(f"warm-up: {self.warm} directives, until each is delivered")
        for d in self.plan[: self.warm]:
            await producer.send(topic, d.value, key=d.key)
        await producer.flush()
        await self.collect(clients, [d for d in self.plan[: self.warm] if d.allowed], 120)
        self.bench.say(f"measuring: {DIRECTIVE_RATE}/s for {self.seconds:g} s")
        measured = self.measured

        async def send(i: int, now: float) -> None:
            self.sent[measured[i].id] = now
            await producer.send(topic, measured[i].value, key=measured[i].key)

        self.elapsed = await paced(DIRECTIVE_RATE, self.seconds, send)
        await producer.flush()
        self.report = await self.collect(clients, [d for d in measured if d.allowed], 30)

    def latencies(self) -> Latencies:
        """Send to the target's console reading it, per allowed directive sent."""
        samples, missing = [], 0
        for d in self.measured:
            if not d.allowed or d.id not in self.sent:
                continue
            at = self.at_target(self.report, d)
            if at:
                samples.append((min(at) - self.sent[d.id]) * 1000)
            else:
                missing += 1
        samples.sort()
        return Latencies(samples, missing)

    def committed(self) -> Latencies:
        """Send to the approved directive being readable (read_committed): the enforcer's
        share of the end-to-end latency."""
        samples = sorted(
            (self.visible[d.id] - self.sent[d.id]) * 1000
            for d in self.measured
            if d.allowed and d.id in self.sent and d.id in self.visible
        )
        return Latencies(samples, sum(d.allowed for d in self.measured) - len(samples))


def directive_scenario(bench: Bench) -> list[Result]:
    seconds = 3.0 if bench.quick else 10.0
    interval = EnforcerSettings.from_env().commit_interval_ms
    warm = DIRECTIVE_RATE  # one second's worth
    plan = plan_directives(warm + int(DIRECTIVE_RATE * seconds))
    run = DirectiveRun(bench, bench.kafka(), plan, warm, seconds, interval)
    asyncio.run(run.run())
    lat, committed = run.latencies(), run.committed()
    bench.say(f"{lat.text()}, {lat.missing} allowed directives missing")
    bench.say(f"of which send -> readable on the approved topic: {committed.text()}")
    bound = interval + 30
    ratio = lat.p(99) / bound
    sent = len(run.sent)
    allowed = sum(d.allowed for d in run.measured)
    pace = (sent - 1) / run.elapsed if run.elapsed > 0 else 0.0
    detail = (
        f"{sent:,} directives written straight to <prefix>.directives.submitted at "
        f"{pace:,.0f}/s (asked {DIRECTIVE_RATE}/s; {allowed:,} allowed, the rest denied, as "
        f"checked against the policy when made), after {warm} sent at once to warm up; an "
        f"enforcer process (exactly once, commit interval {interval} ms) and a gateway "
        f"process; {len(run.targets)} consoles in a separate process, one per target unit, "
        f"subscribed to 'directives'. Latency: from the send of an allowed directive to its "
        f"target unit's console reading it. Allowed directives that never arrived: "
        f"{lat.missing}. Of that, from the send to a read_committed reader in this process "
        f"(fetching as the gateway does) getting it from <prefix>.directives.approved: "
        f"{committed.text()}. Baseline: the commit interval (a directive waits for its "
        f"transaction's commit before any read_committed reader may see it)."
    )
    figures = lat.figures() | {
        "directives": sent,
        "allowed": allowed,
        "sent_per_s": pace,
        "commit_interval_ms": interval,
        "bound_ms": bound,
        "readable_p50_ms": committed.p(50),
        "readable_p99_ms": committed.p(99),
    }
    return [
        Result(
            scenario=f"directive end to end, {DIRECTIVE_RATE}/s",
            ours=lat.text(),
            baseline=f"enforcer commit interval {interval} ms",
            ratio=ratio,
            ratio_label="of commit interval + 30 ms",
            goal="p99 <= commit interval + 30 ms",
            met=ratio <= 1 and lat.missing == 0,
            figures=figures,
            detail=detail,
            samples={"c2bus directive, submit → delivered": lat.samples},
        )
    ]


# --- 3. whole pipeline -------------------------------------------------------------------------


async def _climb(bench: Bench, rig: SaRig, seconds: float, refinements: int) -> list[SaStep]:
    """From 1,000/s, double the rate while it holds (or halve it, down to 125/s, until one
    does); then halve the gap between the highest rate that held and the lowest that did
    not, ``refinements`` times. A step that lost consoles ends the search."""
    steps: list[SaStep] = []

    async def attempt(rate: float) -> bool | None:
        result = await rig.step(rate, seconds)
        steps.append(result)
        bench.say(("held: " if result.holds() else "did not hold: ") + result.summary())
        return None if result.closed else result.holds()

    good, bad, rate = 0.0, math.inf, 1_000.0
    while 125 <= rate <= 64_000 and (good == 0 or math.isinf(bad)):
        held = await attempt(rate)
        if held is None:
            return steps
        if held:
            good = rate
        else:
            bad = rate
        rate = rate * 2 if held else rate / 2
    for _ in range(refinements):
        rate = round((good + bad) / 2, -1)
        if good == 0 or math.isinf(bad) or rate in (good, bad):
            break
        held = await attempt(rate)
        if held is None:
            break
        good, bad = (rate, bad) if held else (good, rate)
    return steps


def pipeline_scenario(bench: Bench) -> list[Result]:
    seconds = 2.0 if bench.quick else 5.0
    size = mean_sa_size()
    kafka = bench.kafka()

    async def run() -> list[SaStep]:
        async with sa_rig(bench, kafka, "pipe", PIPELINE_PER_SECTOR, 900) as rig:
            bench.say("warm-up: 1,000/s for 1 s")
            await rig.step(1_000, 1.0)
            return await _climb(bench, rig, seconds, 1 if bench.quick else 2)

    steps = asyncio.run(run())
    held = [s for s in steps if s.holds()]
    best = max(held, key=lambda s: s.rate) if held else None
    perf = producer_performance(bench, 200_000 if bench.quick else 1_000_000, size)
    bench.say(f"ProducerPerformance: {perf:,.0f} records/s")
    ours = best.rate if best else 0.0
    detail = (
        f"SA track events ({size} bytes on average) paced at each rate for {seconds:g} s "
        f"(acks=all, linger 5 ms) through the set-up of 'SA end to end': one gateway process, "
        f"{SECTORS * PIPELINE_PER_SECTOR} consoles in a separate process, "
        f"{PIPELINE_PER_SECTOR} per longitude strip of the box, so each event reaches "
        f"{PIPELINE_PER_SECTOR} console(s) (the rate the pipeline carries; fan-out is the "
        f"other scenarios' subject). A rate holds when "
        f"producer -> last console p99 < {PIPELINE_P99_MS:g} ms, every event reached every "
        f"console it was for, no console was closed and the producer kept >= {PACE_KEPT:.0%} "
        f"of the pace. Steps: {'; '.join(s.summary() for s in steps)}. Baseline: Kafka "
        f"ProducerPerformance on the same broker (--throughput -1, acks=all, {size}-byte "
        f"records, a fresh topic laid out as the SA topic)."
    )
    figures = {"max_rate_per_s": ours, "producer_performance_per_s": perf}
    figures |= {f"p99_ms_at_{s.rate:.0f}": s.latencies.p(99) for s in steps}
    samples = {}
    if best is not None:
        samples[f"c2bus SA at {best.rate:,.0f}/s, producer → last console"] = best.latencies.samples
    return [
        Result(
            scenario="whole pipeline, max sustainable SA rate",
            ours=f"{ours:,.0f} events/s"
            + (f" (p99 {best.latencies.p(99):.1f} ms)" if best else ""),
            baseline=f"Kafka ProducerPerformance {perf:,.0f} records/s",
            ratio=ours / perf if perf else None,
            ratio_label="of ProducerPerformance",
            goal=f"none: report it (p99 < {PIPELINE_P99_MS:g} ms, {SECTORS * PIPELINE_PER_SECTOR} "
            "consoles)",
            met=None,
            figures=figures,
            detail=detail,
            samples=samples,
        )
    ]
