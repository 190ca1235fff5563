"""Event decode + validate against ``orjson.loads`` of the same bytes.

    .venv/bin/python -m loadtests --only decode

The events are the simulator's SA tracks and directives, encoded as on the topics. Ours is
what a service does with a record: the typed decode that validates every field of the
CloudEvents contract (``EventDecoder(SaEvent)`` / ``EventDecoder(SubmittedEvent)``, as the
gateway and the enforcer hold them), then the security label parsed. The baseline only
parses the JSON into dicts (``orjson.loads``), validating nothing. Both run over the same
list of bytes, rounds alternating; the median per-event time of each is compared.
Goal: ours ≤ 1.0 x the baseline.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from c2bus.adapters.settings import project_root
from c2bus.core.codec import EventDecoder, encode_event
from c2bus.core.events import SaEvent, SubmittedEvent
from c2bus.core.policy.compiler import load_policy
from c2bus.core.policy.evaluator import PolicyEvaluator
from c2bus.tools.simulator.model import initial_tracks, next_directive, step, track_event

from .core import Bench, Result

SA: EventDecoder[SaEvent] = EventDecoder(SaEvent)
SUBMITTED: EventDecoder[SubmittedEvent] = EventDecoder(SubmittedEvent)


def corpus(tracks: int, steps: int, directives: int) -> tuple[list[bytes], list[bytes]]:
    rng = random.Random(11)
    now = datetime.now(UTC)
    moving = initial_tracks(tracks, rng)
    sa = []
    for seq in range(steps):
        moving = [step(t, 1.0) for t in moving]
        sa += [encode_event(track_event(t, now, "urn:bench", seq)) for t in moving]
    policy = PolicyEvaluator(
        load_policy((project_root() / "deploy" / "policies" / "alliance.yaml").read_bytes())
    )
    orders = [
        encode_event(next_directive(policy, rng, now, "urn:bench", i)) for i in range(directives)
    ]
    return sa, orders


def ours_sa(raw: bytes) -> Any:
    event = SA.decode_event(raw)
    return event.label


def ours_directive(raw: bytes) -> Any:
    event = SUBMITTED.decode_event(raw)
    return event.label


def per_event_us(fn: Callable[[bytes], Any], records: list[bytes]) -> float:
    start = time.perf_counter()
    for raw in records:
        fn(raw)
    return (time.perf_counter() - start) / len(records) * 1e6


def compare(
    bench: Bench, name: str, ours: Callable[[bytes], Any], records: list[bytes], rounds: int
) -> tuple[float, float]:
    for raw in records:  # the same answer first: every record decodes both ways
        ours(raw)
        orjson.loads(raw)
    samples: dict[str, list[float]] = {"ours": [], "orjson": []}
    for r in range(rounds):
        order = (("ours", ours), ("orjson", orjson.loads))
        for label, fn in order if r % 2 == 0 else order[::-1]:
            samples[label].append(per_event_us(fn, records))
    mine, base = statistics.median(samples["ours"]), statistics.median(samples["orjson"])
    bench.say(f"{name}: {len(records):,} events, ours {mine:.2f} µs, orjson.loads {base:.2f} µs")
    return mine, base


def scenario(bench: Bench) -> list[Result]:
    rounds = 5 if bench.quick else 15
    sa, orders = corpus(100, 20 if bench.quick else 100, 500 if bench.quick else 5000)
    size = statistics.mean(len(r) for r in sa)
    results = []
    for name, fn, records in (("SA track", ours_sa, sa), ("directive", ours_directive, orders)):
        mine, base = compare(bench, name, fn, records, rounds)
        ratio = mine / base
        results.append(
            Result(
                scenario=f"decode + validate, {name}",
                ours=f"{mine:.2f} µs/event",
                baseline=f"orjson.loads {base:.2f} µs/event",
                ratio=ratio,
                ratio_label="x orjson",
                goal="≤ 1.0 x",
                met=ratio <= 1.0,
                figures={"ours_us": mine, "orjson_us": base, "events": len(records)},
                detail=f"{len(records):,} events"
                + (f", {size:.0f} bytes on average" if name == "SA track" else "")
                + f", median of {rounds} alternating rounds; ours validates every field and "
                "parses the label, orjson.loads only parses",
            )
        )
    return results
