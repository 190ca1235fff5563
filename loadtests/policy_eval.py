"""Evaluation rate of the compiled alignment policy against a hand-written baseline.

    .venv/bin/python -m loadtests.policy_eval [--directives N] [--rounds R]

Both evaluate the same directives, in the same process, against the reference policy
(deploy/policies/alliance.yaml). The hand-written function hard-codes that policy's rules
the way one would without an engine; the run first checks that both give the same verdict
for every directive, then times each and prints the rates and their ratio. Goal: the
compiled evaluator within 3x of the hand-written one.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from c2bus.adapters.settings import project_root
from c2bus.core.events import DirectiveEvent, Verdict
from c2bus.core.fields import GeoPoint
from c2bus.core.labels import NATO_MEMBERS, parse_releasability
from c2bus.core.policy.compiler import load_policy
from c2bus.core.policy.evaluator import DirectiveContext, PolicyEvaluator
from c2bus.core.policy.geo import Polygon
from c2bus.tools.simulator.model import next_directive

from .core import Bench, Result

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T_END = datetime(2031, 1, 1, tzinfo=UTC)

# --- the reference policy, written by hand ---------------------------------------------

NATION = {
    "SHAPE": "NATO", "JFC-BRUNSSUM": "NATO", "MNC-NE": "NATO", "JFC-NAPLES": "NATO",
    "DEU-HEER": "DEU", "DEU-PZBRIG-41": "DEU", "DEU-PZGRENBTL-411": "DEU",
    "POL-DGRSZ": "POL", "POL-12BDE": "POL", "LTU-LF": "LTU", "LTU-IRON-WOLF": "LTU",
    "NLD-CLAS": "NLD", "NLD-11AMB": "NLD", "ITA-COMFOTER": "ITA", "ITA-ARIETE": "ITA",
    "ESP-FUTER": "ESP", "ESP-BRILAT": "ESP",
}  # fmt: skip
PARENT = {
    "JFC-BRUNSSUM": "SHAPE", "MNC-NE": "JFC-BRUNSSUM", "JFC-NAPLES": "SHAPE",
    "DEU-PZBRIG-41": "DEU-HEER", "DEU-PZGRENBTL-411": "DEU-PZBRIG-41",
    "POL-12BDE": "POL-DGRSZ", "LTU-IRON-WOLF": "LTU-LF", "NLD-11AMB": "NLD-CLAS",
    "ITA-ARIETE": "ITA-COMFOTER", "ESP-BRILAT": "ESP-FUTER",
}  # fmt: skip
# (unit, to, relationship, from, until)
TRANSFERS = (
    ("DEU-PZBRIG-41", "MNC-NE", "OPCON", T0, T_END),
    ("POL-12BDE", "MNC-NE", "OPCON", T0, T_END),
    ("LTU-IRON-WOLF", "MNC-NE", "TACON", datetime(2026, 6, 1, tzinfo=UTC), T_END),
    ("NLD-11AMB", "JFC-BRUNSSUM", "OPCON", T0, T_END),
    ("ITA-ARIETE", "JFC-NAPLES", "OPCON", T0, T_END),
    ("ESP-BRILAT", "JFC-NAPLES", "TACON", datetime(2025, 1, 1, tzinfo=UTC), T0),
)
MANOEUVRE = {"COMMAND", "OPCON", "TACON"}
PERMITS = {
    "MOVE": MANOEUVRE, "RECONNOITRE": MANOEUVRE, "SCREEN": MANOEUVRE, "HOLD_POSITION": MANOEUVRE,
    "RESUPPLY": {"COMMAND", "OPCON", "ADCON"}, "REORGANISE": {"COMMAND", "OPCON"},
    "ENGAGE": {"COMMAND", "OPCON"},
}  # fmt: skip
NEEDS_AREA = {"MOVE", "RECONNOITRE", "SCREEN", "ENGAGE"}
DEU_AREA = Polygon.of(
    [GeoPoint(lat=a, lon=b) for a, b in ((53.0, 9.0), (53.0, 27.0), (58.5, 27.0), (58.5, 9.0))]
)
ROE_AREA = Polygon.of(
    [GeoPoint(lat=a, lon=b) for a, b in ((54.5, 13.0), (54.5, 20.0), (57.5, 20.0), (57.5, 13.0))]
)
ITA_UNTIL = datetime(2027, 1, 1, tzinfo=UTC)


def superiors(unit: str) -> list[str]:
    chain = []
    while unit in PARENT:
        unit = PARENT[unit]
        chain.append(unit)
    return chain


def held_by_hand(issuer: str, target: str, now: datetime) -> set[str]:
    held = {"COMMAND"} if issuer in superiors(target) else set()
    for unit, to, relationship, start, until in TRANSFERS:
        covered = target == unit or unit in superiors(target)
        if covered and start <= now < until and issuer in (to, *superiors(to)):
            held.add(relationship)
    return held


def decide_by_hand(d: DirectiveEvent, now: datetime) -> Verdict:
    data = d.data
    skew = timedelta(seconds=30)
    deny = data.expires <= now or d.time > now + skew
    deny |= data.valid_from is not None and data.valid_from > now + skew
    issuer_nation, nation = NATION.get(data.issuer), NATION.get(data.target)
    if issuer_nation is None or nation is None or data.kind not in PERMITS:
        return Verdict.DENY
    held = held_by_hand(data.issuer, data.target, now)
    deny |= not held & PERMITS[data.kind]
    markings = parse_releasability(d.releasableto)
    deny |= nation not in markings and not (
        "NATO" in markings and nation in NATO_MEMBERS | {"NATO"}
    )
    deny |= data.kind in NEEDS_AREA and not data.area
    hold = False
    if issuer_nation != nation:
        if nation == "DEU":
            deny |= bool(data.area) and not DEU_AREA.covers(data.area or [])
            hold |= data.kind == "ENGAGE"  # red card; no approvals in this benchmark
        if nation == "LTU":
            deny |= data.kind == "REORGANISE"
        if nation == "ITA":
            start = data.valid_from or now
            deny |= not (T0 <= start < ITA_UNTIL and data.expires <= ITA_UNTIL)
    if data.kind == "ENGAGE":
        deny |= not (data.area and T0 <= now < T_END and ROE_AREA.covers(data.area))
        hold = True  # two approvers needed, none given
    return Verdict.DENY if deny else Verdict.HOLD if hold else Verdict.ALLOW


# --- the run ---------------------------------------------------------------------------


def rate(
    fn: Callable[[DirectiveEvent], object], directives: list[DirectiveEvent], rounds: int
) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for d in directives:
            fn(d)
        samples.append(len(directives) / (time.perf_counter() - start))
    return statistics.median(samples)


def measure(count: int, rounds: int) -> tuple[float, float, str]:
    """(hand-written, compiled) evaluations/s, medians of ``rounds``, and the verdict mix."""
    policy = load_policy((project_root() / "deploy" / "policies" / "alliance.yaml").read_bytes())
    compiled = PolicyEvaluator(policy)
    rng = random.Random(42)
    directives = [next_directive(compiled, rng, NOW, "urn:bench", i) for i in range(count)]
    ctx = DirectiveContext(NOW)
    mismatches = [
        d for d in directives if compiled.evaluate(d, ctx).verdict is not decide_by_hand(d, NOW)
    ]
    if mismatches:
        raise SystemExit(f"the two disagree on {len(mismatches)} directives, e.g. {mismatches[0]}")
    verdicts = {v: sum(decide_by_hand(d, NOW) is v for d in directives) for v in Verdict}
    by_hand = rate(lambda d: decide_by_hand(d, NOW), directives, rounds)
    engine = rate(lambda d: compiled.evaluate(d, ctx), directives, rounds)
    mix = ", ".join(f"{v.value} {n}" for v, n in verdicts.items())
    return by_hand, engine, mix


def scenario(bench: Bench) -> list[Result]:
    count, rounds = (1000, 3) if bench.quick else (5000, 7)
    by_hand, engine, mix = measure(count, rounds)
    bench.say(f"hand-written {by_hand:,.0f}/s, compiled {engine:,.0f}/s ({mix})")
    ratio = by_hand / engine
    return [
        Result(
            scenario="policy evaluation",
            ours=f"{engine:,.0f} decisions/s",
            baseline=f"hand-written function {by_hand:,.0f}/s",
            ratio=ratio,
            ratio_label="x slower",
            goal="within 3 x",
            met=ratio <= 3,
            figures={"compiled_per_s": engine, "hand_written_per_s": by_hand},
            detail=f"{count:,} simulator directives ({mix}), same verdicts from both; "
            f"median of {rounds} rounds",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--directives", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    by_hand, engine, mix = measure(args.directives, args.rounds)
    print(f"directives: {args.directives} ({mix}); same verdicts; median of {args.rounds} rounds")
    print(f"hand-written   {by_hand:12,.0f} evaluations/s")
    print(f"compiled       {engine:12,.0f} evaluations/s")
    ratio = by_hand / engine
    verdict = "met" if ratio <= 3 else "NOT met"
    print(f"hand-written / compiled = {ratio:.2f}x  (goal: compiled within 3x: {verdict})")


if __name__ == "__main__":
    main()
