"""How long an enforcer takes to restore a partition's held state, as decided directives
pile up in the held topic.

    .venv/bin/python -m loadtests.restore [--directives N ...] [--held H] [--bootstrap B]

For each history size N: fresh topics, H directives held for approvals (valid for hours),
then N directives decided at once and valid for a few seconds; an enforcer process
(``python -m c2bus.services.enforcer``) decides them all, keeps sweeping until every one of
them has expired (their seen marks tombstoned) and stops. Then the held state of every
partition is read back two ways, alternating, seven times each, with the enforcer's own
restore functions (``c2bus.services.enforcer.restore``): from the marks its last
transactions committed (what a lane does), and from each partition's beginning (the
baseline, what it did before); the best read of each kind counts. Both readings must fold
into the same state.

Goal: the restore from the marks stays flat (the largest history within 1.5 x the smallest's
time) while the read from the beginning grows with the history. Without ``--bootstrap`` a
local broker is started on port 29092 under ``.c2bus/bench`` and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from aiokafka.structs import TopicPartition

from c2bus.adapters.kafka import probe
from c2bus.adapters.settings import KafkaSettings
from c2bus.core.codec import encode_event
from c2bus.core.held import HeldDirectives
from c2bus.core.policy.compiler import compile_policy, load_policy_document
from c2bus.core.policy.evaluator import PolicyEvaluator
from c2bus.errors import KafkaError
from c2bus.services.enforcer.restore import committed, read_held
from c2bus.tools.simulator.model import next_directive

from .core import Bench, Result
from .enforcer_txn import POLICY, Enforcer, broker, prepare, produce, quiet, say

#: the decided directives expire this long after they are written
SHORT_LIFE_S = 15.0


def workload(held: int, decided: int, seed: int = 11) -> list[tuple[bytes, bytes]]:
    """(key, value): ``held`` directives that wait for approvals, valid for six hours, then
    ``decided`` ones allowed or denied at once, valid for :data:`SHORT_LIFE_S`."""
    evaluator = PolicyEvaluator(compile_policy(load_policy_document(POLICY.read_bytes())))
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for seq in range(held + decided):
        hold = seq < held
        event = next_directive(
            evaluator,
            rng,
            now,
            "urn:bench:restore",
            seq,
            deny_ratio=0.0 if hold else 0.3,
            hold_ratio=1.0 if hold else 0.0,
        )
        if not hold:
            expires = now + timedelta(seconds=SHORT_LIFE_S)
            event = msgspec.structs.replace(
                event, data=msgspec.structs.replace(event.data, expires=expires)
            )
        out.append((event.data.target.encode(), encode_event(event)))
    return out


@dataclass
class Reading:
    seconds: list[float]
    records: int
    held: int


@dataclass
class Sample:
    decided: int
    topic_records: int
    marked: Reading
    full: Reading


async def decide(kafka: KafkaSettings, held: int, decided: int) -> tuple[KafkaSettings, str, str]:
    """Topics with the workload decided and expired; returns the settings, held topic and
    the enforcer's group."""
    topics = await prepare(kafka, "r")
    await produce(kafka, topics.submitted, workload(held, decided))
    written = time.monotonic()
    group = f"{topics.prefix}.enforcer"
    tps = await partitions(kafka, topics.submitted)
    total = held + decided
    with Enforcer(kafka, topics.prefix, True, 100):
        async with asyncio.timeout(900):
            while True:  # another process decides: poll its group's commits
                if await decided_count(kafka, group, tps) >= total:
                    break
                await asyncio.sleep(0.2)
            say(f"{total:,} decided; waiting for their expiry and the sweeps after it")
            # seen marks go at the first sweep after expiry (every second), the refresh
            # follows at the sweeps after that; then the enforcer stops and commits
            await asyncio.sleep(max(0.0, written + SHORT_LIFE_S - time.monotonic()) + 5.0)
    return kafka, topics.held, group


async def decided_count(kafka: KafkaSettings, group: str, tps: list[TopicPartition]) -> int:
    """Input records the group has committed (0 while its coordinator is not up)."""
    try:
        return sum(c.offset for c in (await committed(kafka, group, tps)).values())
    except KafkaError as exc:
        if not exc.retriable:
            raise
        return 0


async def partitions(kafka: KafkaSettings, topic: str) -> list[TopicPartition]:
    info = await probe(kafka)
    return [TopicPartition(topic, p) for p in sorted(info.partitions[topic])]


async def sample(kafka: KafkaSettings, held: int, decided: int, repeats: int) -> Sample:
    kafka, held_topic, group = await decide(kafka, held, decided)
    tps = await partitions(kafka, held_topic)
    numbers = [tp.partition for tp in tps]
    input_tps = [TopicPartition(held_topic.replace(".held", ".submitted"), p) for p in numbers]
    marks = {
        p: c.mark
        for p, c in (await committed(kafka, group, input_tps)).items()
        if c.mark is not None
    }
    if len(marks) != len(numbers):
        raise SystemExit(f"marks committed for {len(marks)} of {len(numbers)} partitions")
    times: dict[str, list[float]] = {"marked": [], "full": []}
    states: dict[str, HeldDirectives] = {}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for name, starts in (("marked", marks), ("full", {})):
            started = time.perf_counter()
            reading = await read_held(kafka, held_topic, numbers, starts)
            state = HeldDirectives()
            state.restore(reading.records)
            times[name].append(time.perf_counter() - started)
            states[name], counts[name] = state, len(reading.records)
    marked, full = states["marked"], states["full"]
    for p in numbers:
        if marked.held_in(p) != full.held_in(p) or marked.seen_in(p) != full.seen_in(p):
            raise SystemExit(f"partition {p}: the state read from the mark differs")
    if len(marked) != held:
        raise SystemExit(f"{len(marked)} held after the restore, {held} expected")
    ends = sum((await read_held(kafka, held_topic, numbers, {})).ends.values())
    return Sample(
        decided,
        ends,
        Reading(times["marked"], counts["marked"], len(marked)),
        Reading(times["full"], counts["full"], len(full)),
    )


def ms(reading: Reading) -> float:
    """The best of the reads: a read of a few hundred records takes tens of milliseconds,
    most of it starting a consumer, and a median of such reads is mostly noise."""
    return min(reading.seconds) * 1000


async def run(kafka: KafkaSettings, sizes: list[int], held: int, repeats: int) -> list[Sample]:
    samples = []
    for size in sizes:
        say(f"history of {size:,} decided directives, {held} held")
        s = await sample(kafka, held, size, repeats)
        say(
            f"{size:,} decided, {s.topic_records:,} held-topic offsets: from the marks "
            f"{ms(s.marked):.0f} ms ({s.marked.records:,} records), from the beginning "
            f"{ms(s.full):.0f} ms ({s.full.records:,} records)"
        )
        samples.append(s)
    return samples


def results(samples: list[Sample], held: int) -> list[Result]:
    small, large = samples[0], samples[-1]
    flat = ms(large.marked) / ms(small.marked)
    growth = ms(large.full) / ms(small.full)
    rows = ", ".join(
        f"{s.decided:,}: {ms(s.marked):.0f} ms / {s.marked.records:,} records vs "
        f"{ms(s.full):.0f} ms / {s.full.records:,}"
        for s in samples
    )
    return [
        Result(
            scenario=f"held-state restore, {small.decided:,} → {large.decided:,} decided",
            ours=f"{ms(small.marked):.0f} → {ms(large.marked):.0f} ms from the marks",
            baseline=f"from the beginning {ms(small.full):.0f} → {ms(large.full):.0f} ms",
            ratio=flat,
            ratio_label="largest / smallest",
            goal="<= 1.5",
            met=flat <= 1.5,
            figures={
                "flat_ratio": flat,
                "full_read_growth": growth,
                **{f"marked_ms_{s.decided}": ms(s.marked) for s in samples},
                **{f"full_ms_{s.decided}": ms(s.full) for s in samples},
                **{f"marked_records_{s.decided}": s.marked.records for s in samples},
                **{f"full_records_{s.decided}": s.full.records for s in samples},
            },
            detail=f"{held} directives held for approvals throughout; per history size "
            f"(decided directives, all expired): {rows}; best of alternating reads, both "
            "folded into the same state. The read from the beginning grew "
            f"{growth:.1f} x.",
        )
    ]


def scenario(bench: Bench) -> list[Result]:
    sizes = [6_000, 24_000] if bench.quick else [6_000, 24_000, 60_000]
    kafka = bench.kafka()
    return results(asyncio.run(run(kafka, sizes, 100, 7)), 100)


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.restore", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--directives", type=int, nargs="+", default=[6_000, 24_000, 60_000], help="history sizes"
    )
    parser.add_argument("--held", type=int, default=100, help="directives held throughout")
    parser.add_argument("--repeats", type=int, default=7, help="reads of each kind")
    parser.add_argument("--bootstrap", help="an existing cluster (default: a local broker)")
    args = parser.parse_args()
    quiet()
    with broker(args.bootstrap or os.environ.get("C2BUS_KAFKA_BOOTSTRAP")) as kafka:
        samples = asyncio.run(run(kafka, sorted(args.directives), args.held, args.repeats))
    for result in results(samples, args.held):
        print(f"{result.scenario}: {result.ours}; {result.baseline}; ratio {result.ratio:.2f}")
        print(f"  {result.detail}")


if __name__ == "__main__":
    cli()
