"""What security costs: the enforcer's throughput and the SA end-to-end p99 on the secured
listener (TLS, SCRAM-SHA-512, ACLs) against an open PLAINTEXT listener of the same broker, in
the same run, rounds alternating.

    .venv/bin/python -m loadtests --only security [--quick]

The benchmark broker alone has the open listener (``C2BUS_KAFKA_PLAINTEXT_PORT``: anonymous
clients are super users there, so the plaintext runs skip the ACL checks as well), only to
measure this. Goals: throughput ≥ 0.8 x plaintext, p99 ≤ 1.2 x plaintext.
"""

from __future__ import annotations

import asyncio
import statistics

from c2bus.adapters.settings import KafkaSettings

from .core import Bench, Result
from .e2e import PER_SECTOR, SA_RATE, sa_rig
from .enforcer_txn import directives, throughput

MODES = ("SASL_SSL", "PLAINTEXT")


async def sa_p99(bench: Bench, kafka: KafkaSettings, seconds: float) -> float:
    async with sa_rig(bench, kafka, "sec", PER_SECTOR, 300 + seconds) as rig:
        await rig.step(SA_RATE, 1.0)
        step = await rig.step(SA_RATE, seconds)
        bench.say(step.summary())
        return step.latencies.p(99)


def scenario(bench: Bench) -> list[Result]:
    clusters = {"SASL_SSL": bench.kafka(), "PLAINTEXT": bench.open_kafka()}
    count, rounds = (10_000, 1) if bench.quick else (20_000, 2)
    seconds = 3.0 if bench.quick else 10.0
    records = directives(count)
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    p99s: dict[str, list[float]] = {m: [] for m in MODES}

    async def run() -> None:
        for round_ in range(rounds):
            order = MODES if round_ % 2 == 0 else MODES[::-1]
            for mode in order:
                rate = await throughput(clusters[mode], records, True, 100)
                rates[mode].append(rate)
                bench.say(f"round {round_ + 1}/{rounds} enforcer on {mode}: {rate:,.0f}/s")
            for mode in order:
                p99 = await sa_p99(bench, clusters[mode], seconds)
                p99s[mode].append(p99)
                bench.say(f"round {round_ + 1}/{rounds} SA end to end on {mode}: p99 {p99:.1f} ms")

    asyncio.run(run())
    rate = {m: statistics.median(v) for m, v in rates.items()}
    p99 = {m: statistics.median(v) for m, v in p99s.items()}
    throughput_ratio = rate["SASL_SSL"] / rate["PLAINTEXT"]
    latency_ratio = p99["SASL_SSL"] / p99["PLAINTEXT"]
    detail = (
        f"the same broker, its secured and its open listener; {count:,} directives per "
        f"throughput run and {SA_RATE:,} SA events/s for {seconds:g} s to "
        f"{PER_SECTOR} consoles per event, medians of {rounds} alternating rounds"
    )
    return [
        Result(
            scenario="cost of security: enforcer throughput",
            ours=f"SASL_SSL {rate['SASL_SSL']:,.0f} directives/s",
            baseline=f"PLAINTEXT {rate['PLAINTEXT']:,.0f}/s",
            ratio=throughput_ratio,
            ratio_label="of plaintext",
            goal=">= 0.8",
            met=throughput_ratio >= 0.8,
            figures={"secured_per_s": rate["SASL_SSL"], "plaintext_per_s": rate["PLAINTEXT"]},
            detail=detail,
        ),
        Result(
            scenario="cost of security: SA end-to-end p99",
            ours=f"SASL_SSL p99 {p99['SASL_SSL']:.1f} ms",
            baseline=f"PLAINTEXT p99 {p99['PLAINTEXT']:.1f} ms",
            ratio=latency_ratio,
            ratio_label="x plaintext",
            goal="<= 1.2",
            met=latency_ratio <= 1.2,
            figures={"secured_p99_ms": p99["SASL_SSL"], "plaintext_p99_ms": p99["PLAINTEXT"]},
            detail=detail,
        ),
    ]
