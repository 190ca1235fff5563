"""What exactly-once costs the enforcer: throughput with transactions against the same
enforcer without them, and the decision latency each commit interval costs.

    .venv/bin/python -m loadtests.enforcer_txn [--directives N] [--rounds R] [--bootstrap B]

Throughput: N directives (the same bytes for every run) are written to the input topic
first; then an enforcer process (``python -m c2bus.services.enforcer``) decides them, and the rate
is taken from its group's committed offsets between 5 % and 100 % of the input. Runs
alternate exactly-once (a transaction per partition and 100 ms window) and at-least-once
(``C2BUS_ENFORCER_EXACTLY_ONCE=false``: one idempotent producer, flush, then an offset
commit, also every 100 ms), R rounds each; medians are compared. Goal: exactly-once at
>= 90 % of at-least-once.

Latency: after a warm-up burst, a paced load (200 directives/s for 10 s) per commit
interval; a ``read_committed`` consumer times each decision from the moment its directive
was sent.

Without ``--bootstrap`` (or ``C2BUS_KAFKA_BOOTSTRAP``) a single local broker is started on
port 29092 under ``.c2bus/bench`` and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.structs import TopicPartition

from c2bus.adapters.acls import grant
from c2bus.adapters.kafka import admin_client, new_consumer, new_producer, probe, start_client
from c2bus.adapters.policy_store import publish
from c2bus.adapters.settings import KafkaSettings, LocalKafkaSettings, project_root
from c2bus.adapters.topics import TopicNames, create_topics
from c2bus.core.codec import EventDecoder, encode_event
from c2bus.core.events import DecisionEvent
from c2bus.core.policy.compiler import compile_policy, load_policy_document
from c2bus.core.policy.evaluator import PolicyEvaluator
from c2bus.tools.localkafka import LocalCluster
from c2bus.tools.simulator.model import next_directive

from .core import Bench, Result

ROOT = project_root()
POLICY = ROOT / "deploy" / "policies" / "alliance.yaml"
BENCH_PORT = "29092"
DECISIONS: EventDecoder[DecisionEvent] = EventDecoder(DecisionEvent)


def say(message: str) -> None:
    print(f"[enforcer_txn {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[KafkaSettings]:
    """The cluster to use, as its admin: the given one (its credentials from the
    ``C2BUS_KAFKA_*`` variables), or a local broker of the benchmarks' own."""
    if bootstrap:
        yield KafkaSettings.from_env({**os.environ, "C2BUS_KAFKA_BOOTSTRAP": bootstrap})
        return
    settings = LocalKafkaSettings.from_env(
        {"C2BUS_HOME": str(ROOT / ".c2bus" / "bench"), "C2BUS_KAFKA_PORT": BENCH_PORT}
    )
    cluster = LocalCluster(settings, nodes=1)
    started = not cluster.status().running
    cluster.start(progress=say)
    try:
        yield cluster.client()
    finally:
        if started:
            cluster.stop(progress=say)


def directives(count: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``count`` allowed or denied directives, none held."""
    evaluator = PolicyEvaluator(compile_policy(load_policy_document(POLICY.read_bytes())))
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for seq in range(count):
        event = next_directive(evaluator, rng, now, "urn:bench", seq, hold_ratio=0.0)
        out.append((event.data.target.encode(), encode_event(event)))
    return out


def directive_id(value: bytes) -> str:
    return str(orjson.loads(value)["id"])


class Enforcer:
    """``python -m c2bus.services.enforcer`` on the given topics, for the length of a ``with``."""

    command = ("-m", "c2bus.services.enforcer")

    def __init__(self, kafka: KafkaSettings, prefix: str, exactly_once: bool, interval_ms: int):
        self.env = {
            **os.environ,
            **kafka.environment(),
            "C2BUS_TOPIC_PREFIX": prefix,
            "C2BUS_ENFORCER_PORT": "0",
            "C2BUS_ENFORCER_EXACTLY_ONCE": str(exactly_once).lower(),
            "C2BUS_ENFORCER_COMMIT_INTERVAL_MS": str(interval_ms),
            "C2BUS_INSTANCE": f"bench-{prefix}",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Enforcer:
        self.proc = subprocess.Popen(
            [sys.executable, *self.command],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def __exit__(self, *_: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class UnsignedEnforcer(Enforcer):
    """The enforcer without its signer (``loadtests/unsigned_enforcer.py``): the baseline
    of what signing costs."""

    command = ("-m", "loadtests.unsigned_enforcer")


class Relay(Enforcer):
    """The baseline: ``python -m loadtests.relay``, bare consume → produce in the
    enforcer's group (see ``loadtests/relay.py``)."""

    copies = 1

    def __init__(self, kafka: KafkaSettings, prefix: str, exactly_once: bool, interval_ms: int):
        super().__init__(kafka, prefix, exactly_once, interval_ms)
        self.command = (
            *("-m", "loadtests.relay", prefix),
            *("--interval-ms", str(interval_ms), "--copies", str(self.copies)),
        )


class Relay4(Relay):
    """The relay writing each record four times, as many records as the enforcer writes."""

    copies = 4


async def prepare(kafka: KafkaSettings, tag: str) -> TopicNames:
    prefix = f"bench{tag}{secrets.token_hex(3)}"
    await create_topics(kafka, prefix)
    await grant(kafka, prefix)
    topics = TopicNames(prefix)
    await publish(
        kafka,
        topics.policy,
        load_policy_document(POLICY.read_bytes()),
        None,
        "b",
    )
    return topics


async def produce(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = new_producer(kafka, "bench-load", linger_ms=20)
    await start_client(producer, kafka)
    try:
        sends = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def committed_total(admin: object, group: str, tps: list[TopicPartition]) -> int:
    """Input records the group has committed (0 while the group coordinator is not up)."""
    try:
        offsets = await admin.list_consumer_group_offsets(group)  # type: ignore[attr-defined]
    except AioKafkaError as exc:
        if not exc.retriable:
            raise
        return 0
    return sum(offsets[tp].offset for tp in tps if tp in offsets)


async def throughput(
    kafka: KafkaSettings,
    records: list[tuple[bytes, bytes]],
    exactly_once: bool,
    interval_ms: int,
    process: type[Enforcer] = Enforcer,
) -> float:
    topics = await prepare(kafka, "t")
    await produce(kafka, topics.submitted, records)
    info = await probe(kafka)
    tps = [TopicPartition(topics.submitted, p) for p in info.partitions[topics.submitted]]
    total = len(records)
    group = f"{topics.prefix}.enforcer"
    start_at: float | None = None
    async with admin_client(kafka) as admin:
        with process(kafka, topics.prefix, exactly_once, interval_ms):
            async with asyncio.timeout(600):
                while True:
                    done = await committed_total(admin, group, tps)
                    now = time.monotonic()
                    if start_at is None and done >= total * 0.05:
                        start_at, start_done = now, done
                    if done >= total:
                        break
                    await asyncio.sleep(0.05)
    assert start_at is not None
    if now <= start_at:
        raise SystemExit(f"{total:,} directives went through in one commit: give more to time them")
    return (total - start_done) / (now - start_at)


@dataclass
class Latency:
    p50: float
    p95: float
    p99: float


async def latency(
    kafka: KafkaSettings,
    exactly_once: bool,
    interval_ms: int,
    rate: int,
    seconds: float,
    *,
    process: type[Enforcer] = Enforcer,
) -> Latency:
    topics = await prepare(kafka, "l")
    warm_up = rate * 2
    records = directives(int(rate * seconds) + warm_up, seed=interval_ms)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    consumer = new_consumer(kafka, "bench-observer", group_id=None)
    await start_client(consumer, kafka)
    info = await probe(kafka)
    tps = [TopicPartition(topics.decisions, p) for p in info.partitions[topics.decisions]]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)

    changed = asyncio.Condition()

    async def observe() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            arrived = time.monotonic()
            for part in batch.values():
                for record in part:
                    seen[DECISIONS.decode_event(record.value).data.directive_id] = arrived
            async with changed:
                changed.notify_all()

    producer = new_producer(kafka, "bench-paced", linger_ms=0)
    await start_client(producer, kafka)
    observer = asyncio.create_task(observe())
    try:
        with process(kafka, topics.prefix, exactly_once, interval_ms):
            # Warm up: every partition's lane set up, every output partition's metadata known.
            warm = [directive_id(value) for _, value in records[:warm_up]]
            for key, value in records[:warm_up]:
                await producer.send(topics.submitted, value, key=key)
            async with asyncio.timeout(120), changed:
                await changed.wait_for(lambda: all(d in seen for d in warm))
            begin = time.monotonic()
            for i, (key, value) in enumerate(records[warm_up:]):
                ahead = begin + i / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                sent[directive_id(value)] = time.monotonic()
                await producer.send(topics.submitted, value, key=key)
            await producer.flush()
            async with asyncio.timeout(60), changed:
                await changed.wait_for(lambda: all(d in seen for d in sent))
    finally:
        observer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await observer
        await consumer.stop()
        await producer.stop()
    samples = sorted((seen[d] - t) * 1000 for d, t in sent.items())
    cuts = statistics.quantiles(samples, n=100)
    return Latency(cuts[49], cuts[94], cuts[98])


async def main(args: argparse.Namespace, kafka: KafkaSettings) -> None:
    records = directives(args.directives)
    rates: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(1, args.rounds + 1):
        for exactly_once in (True, False):
            rate = await throughput(kafka, records, exactly_once, 100)
            rates[exactly_once].append(rate)
            mode = "exactly-once " if exactly_once else "at-least-once"
            say(f"round {round_}/{args.rounds} {mode}: {rate:,.0f} directives/s")
    eos, alo = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"\nenforcer throughput, {args.directives:,} directives, 100 ms commit interval")
    print(f"  exactly-once  (transaction per partition): {eos:>9,.0f} directives/s (median)")
    print(f"  at-least-once (flush + offset commit)    : {alo:>9,.0f} directives/s (median)")
    verdict = "met" if eos >= 0.9 * alo else "NOT met"
    print(f"  ratio exactly-once / at-least-once: {eos / alo:.2f} (goal >= 0.90: {verdict})")

    print(f"\ndecision latency, submit -> read_committed decision, {args.rate}/s paced")
    print(f"  {'mode':<15}{'interval':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    runs = [(True, ms) for ms in args.intervals] + [(False, 100)]
    for exactly_once, interval in runs:
        say(f"latency: {'exactly-once' if exactly_once else 'at-least-once'} {interval} ms")
        lat = await latency(kafka, exactly_once, interval, args.rate, args.seconds)
        mode = "exactly-once" if exactly_once else "at-least-once"
        print(f"  {mode:<15}{interval:>8} ms{lat.p50:>10.1f}{lat.p95:>10.1f}{lat.p99:>10.1f}")


def scenario(bench: Bench) -> list[Result]:
    count, rounds = (15_000, 1) if bench.quick else (30_000, 3)
    kafka = bench.kafka()
    records = directives(count)
    processes: dict[str, type[Enforcer]] = {"enforcer": Enforcer, "relay": Relay, "relay4": Relay4}
    rates: dict[str, list[float]] = {name: [] for name in processes}

    async def run() -> None:
        for round_ in range(1, rounds + 1):
            order = list(processes) if round_ % 2 else list(processes)[::-1]
            for name in order:
                rate = await throughput(kafka, records, True, 100, processes[name])
                rates[name].append(rate)
                bench.say(f"round {round_}/{rounds} {name}: {rate:,.0f} directives/s")

    asyncio.run(run())
    ours, bare = statistics.median(rates["enforcer"]), statistics.median(rates["relay"])
    bare4 = statistics.median(rates["relay4"])
    ratio = ours / bare
    return [
        Result(
            scenario="enforcer throughput, transactions on",
            ours=f"{ours:,.0f} directives/s",
            baseline=f"bare aiokafka relay {bare:,.0f}/s",
            ratio=ratio,
            ratio_label="of bare",
            goal=">= 0.70",
            met=ratio >= 0.70,
            figures={
                "enforcer_per_s": ours,
                "relay_per_s": bare,
                "relay_4_copies_per_s": bare4,
                "directives": count,
            },
            detail=f"{count:,} directives in the topic first, then decided; rate from the "
            f"group's committed offsets; median of {rounds} alternating rounds; both commit "
            "a transaction every 100 ms with the same client settings (the enforcer one per "
            "partition, with 3 to 4 output records per directive; the relay one in all, "
            f"copying each record once). The relay writing each record 4 times, about as "
            f"many records as the enforcer writes, did {bare4:,.0f}/s "
            f"(enforcer at {ours / bare4:.2f} of it)",
        )
    ]


def quiet() -> None:
    """aiokafka logs every refused connection while the broker starts: keep the output
    to figures."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.enforcer_txn", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--directives", type=int, default=30_000, help="per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs per mode")
    parser.add_argument("--rate", type=int, default=200, help="paced load for latency, per s")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced load duration")
    parser.add_argument(
        "--intervals", type=int, nargs="+", default=[20, 50, 100, 200], help="commit intervals"
    )
    parser.add_argument("--bootstrap", help="an existing cluster (default: a local broker)")
    args = parser.parse_args()
    quiet()
    with broker(args.bootstrap or os.environ.get("C2BUS_KAFKA_BOOTSTRAP")) as kafka:
        asyncio.run(main(args, kafka))


if __name__ == "__main__":
    cli()
