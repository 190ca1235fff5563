"""What signing costs: the enforcer signing every decision and approved directive (Ed25519)
against the same enforcer with its signer taken away (``loadtests/unsigned_enforcer.py``),
in the same run, rounds alternating: throughput, and the decision latency of paced
directives (submit to the decision readable, read_committed); and a directive's way end
to end (submit to its target unit's console, through an enforcer and a gateway process),
signed and checked against unsigned and unchecked (``loadtests/unsigned_gateway.py``).

    .venv/bin/python -m loadtests --only signing [--quick]

Goal: ≥ 0.9 x unsigned, for each.
"""

from __future__ import annotations

import asyncio
import statistics

from .core import Bench, Result
from .e2e import DIRECTIVE_RATE, DirectiveRun, plan_directives
from .enforcer_txn import Enforcer, UnsignedEnforcer, directives, latency, throughput

MODES: dict[str, type[Enforcer]] = {"signed": Enforcer, "unsigned": UnsignedEnforcer}
RATE = 200  # directives/s, paced, for the latency runs


def scenario(bench: Bench) -> list[Result]:
    kafka = bench.kafka()
    # An even number of rounds, alternating which mode runs first: the first run of a pair
    # is often the slower one here, and each mode must be first as often as the other.
    count, rounds = (10_000, 2) if bench.quick else (20_000, 4)
    seconds = 5.0 if bench.quick else 15.0
    records = directives(count)
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    p99s: dict[str, list[float]] = {m: [] for m in MODES}
    e2e: dict[str, list[float]] = {m: [] for m in MODES}
    warm = DIRECTIVE_RATE  # one second's worth, as the directive end-to-end scenario
    plan = plan_directives(warm + int(DIRECTIVE_RATE * seconds))

    async def run() -> None:
        for round_ in range(rounds):
            order = list(MODES) if round_ % 2 == 0 else list(MODES)[::-1]
            for mode in order:
                rate = await throughput(kafka, records, True, 100, MODES[mode])
                rates[mode].append(rate)
                bench.say(f"round {round_ + 1}/{rounds} enforcer {mode}: {rate:,.0f}/s")
            for mode in order:
                lat = await latency(kafka, True, 100, RATE, seconds, process=MODES[mode])
                p99s[mode].append(lat.p99)
                bench.say(
                    f"round {round_ + 1}/{rounds} decision latency {mode}: p99 {lat.p99:.1f} ms"
                )
            for mode in order:
                way = DirectiveRun(bench, kafka, plan, warm, seconds, 100, mode == "signed")
                await way.run()
                arrived = way.latencies()
                if arrived.missing:
                    raise RuntimeError(
                        f"{arrived.missing} allowed directives never reached a console"
                    )
                e2e[mode].append(arrived.p(99))
                bench.say(f"round {round_ + 1}/{rounds} end to end {mode}: {arrived.text()}")

    asyncio.run(run())
    rate = {m: statistics.median(v) for m, v in rates.items()}
    p99 = {m: statistics.median(v) for m, v in p99s.items()}
    way = {m: statistics.median(v) for m, v in e2e.items()}
    way_ratio = way["unsigned"] / way["signed"]
    throughput_ratio = rate["signed"] / rate["unsigned"]
    latency_ratio = p99["unsigned"] / p99["signed"]  # >= 0.9: signed at most 1/0.9 slower
    detail = (
        f"the same enforcer with and without its signer, {count:,} directives per throughput "
        f"run, {RATE}/s paced for {seconds:g} s per latency run (submit to the decision "
        f"readable), 100 ms commit interval, medians of {rounds} rounds, each mode first in "
        "half of them"
    )
    return [
        Result(
            scenario="cost of signing: enforcer throughput",
            ours=f"signed {rate['signed']:,.0f} directives/s",
            baseline=f"unsigned {rate['unsigned']:,.0f}/s",
            ratio=throughput_ratio,
            ratio_label="of unsigned",
            goal=">= 0.9",
            met=throughput_ratio >= 0.9,
            figures={"signed_per_s": rate["signed"], "unsigned_per_s": rate["unsigned"]},
            detail=detail,
        ),
        Result(
            scenario="cost of signing: decision p99",
            ours=f"signed p99 {p99['signed']:.1f} ms",
            baseline=f"unsigned p99 {p99['unsigned']:.1f} ms",
            ratio=latency_ratio,
            ratio_label="unsigned / signed",
            goal=">= 0.9",
            met=latency_ratio >= 0.9,
            figures={"signed_p99_ms": p99["signed"], "unsigned_p99_ms": p99["unsigned"]},
            detail=detail,
        ),
        Result(
            scenario="cost of signing: directive end to end p99",
            ours=f"signed p99 {way['signed']:.1f} ms",
            baseline=f"unsigned p99 {way['unsigned']:.1f} ms",
            ratio=way_ratio,
            ratio_label="unsigned / signed",
            goal=">= 0.9",
            met=way_ratio >= 0.9,
            figures={"signed_p99_ms": way["signed"], "unsigned_p99_ms": way["unsigned"]},
            detail=(
                f"allowed directives from their send to their target unit's console, "
                f"{DIRECTIVE_RATE}/s for {seconds:g} s after {warm} to warm up, through an "
                "enforcer process and a gateway process (consoles in a third): signed and "
                "checked, against the enforcer unsigned (loadtests/unsigned_enforcer.py) and "
                "the gateway checking nothing (loadtests/unsigned_gateway.py); 100 ms commit "
                f"interval, medians of {rounds} rounds, each mode first in half of them"
            ),
        ),
    ]
