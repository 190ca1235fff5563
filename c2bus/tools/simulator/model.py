"""Pure simulation: tracks moving in a box, and a stream of directives some of which the
chain-of-command policy must deny. Randomness comes from the caller's ``random.Random``."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from c2bus.core.cloudevents import new_event
from c2bus.core.events import (
    DirectiveData,
    DirectiveEvent,
    StandardIdentity,
    TrackData,
    TrackDomain,
    TrackEvent,
    Verdict,
)
from c2bus.core.fields import GeoPoint
from c2bus.core.labels import Classification
from c2bus.core.policy.compiler import CompiledPolicy
from c2bus.core.policy.evaluator import PolicyEvaluator

EARTH_M_PER_DEG = 111_320.0

# The Baltic approaches: (south, west, north, east) in degrees.
DEFAULT_BOX = (53.5, 9.0, 57.5, 24.0)

# (classification, releasableto, weight): most SA is NATO SECRET; some is national only.
LABELS = (
    (Classification.NATO_SECRET, "NATO", 6),
    (Classification.NATO_UNCLASSIFIED, "NATO", 2),
    (Classification.NATO_SECRET, "DEU", 1),
    (Classification.COSMIC_TOP_SECRET, "NATO", 1),
)
KINDS = ("MOVE", "RECONNOITRE", "HOLD_POSITION", "RESUPPLY", "SCREEN")


@dataclass(frozen=True, slots=True)
class SimTrack:
    track_id: str
    lat: float
    lon: float
    course_deg: float
    speed_mps: float
    domain: TrackDomain
    identity: StandardIdentity
    classification: Classification
    releasableto: str


def initial_tracks(
    count: int, rng: random.Random, box: tuple[float, ...] = DEFAULT_BOX
) -> list[SimTrack]:
    south, west, north, east = box
    weights = [w for *_, w in LABELS]
    tracks = []
    for i in range(count):
        domain = rng.choice(
            (TrackDomain.AIR, TrackDomain.AIR, TrackDomain.SURFACE, TrackDomain.LAND)
        )
        speed = {TrackDomain.AIR: 220.0, TrackDomain.SURFACE: 9.0, TrackDomain.LAND: 12.0}[domain]
        classification, releasable, _ = rng.choices(LABELS, weights)[0]
        tracks.append(
            SimTrack(
                track_id=f"TRK-{i + 1:04d}",
                lat=rng.uniform(south, north),
                lon=rng.uniform(west, east),
                course_deg=rng.uniform(0, 360) % 360,
                speed_mps=speed * rng.uniform(0.6, 1.3),
                domain=domain,
                identity=rng.choice(list(StandardIdentity)),
                classification=classification,
                releasableto=releasable,
            )
        )
    return tracks


def step(track: SimTrack, dt_s: float, box: tuple[float, ...] = DEFAULT_BOX) -> SimTrack:
    """Move ``track`` for ``dt_s`` seconds along its course, turning back at the box edges."""
    south, west, north, east = box
    distance = track.speed_mps * dt_s
    rad = math.radians(track.course_deg)
    lat = track.lat + distance * math.cos(rad) / EARTH_M_PER_DEG
    lon = track.lon + distance * math.sin(rad) / (
        EARTH_M_PER_DEG * math.cos(math.radians(track.lat))
    )
    course = track.course_deg
    if not south <= lat <= north:
        course = (180.0 - course) % 360
        lat = min(max(lat, south), north)
    if not west <= lon <= east:
        course = (360.0 - course) % 360
        lon = min(max(lon, west), east)
    return replace(track, lat=lat, lon=lon, course_deg=course)


def track_event(track: SimTrack, now: datetime, source: str, seq: int) -> TrackEvent:
    return new_event(
        TrackEvent,
        id=f"{source}:{track.track_id}:{seq}",
        source=source,
        time=now,
        classification=track.classification,
        releasableto=track.releasableto,
        subject=track.track_id,
        data=TrackData(
            track_id=track.track_id,
            position=GeoPoint(lat=round(track.lat, 6), lon=round(track.lon, 6)),
            domain=track.domain,
            identity=track.identity,
            course_deg=round(track.course_deg, 1) % 360,  # 359.96 rounds to 360: north is 0
            speed_mps=round(track.speed_mps, 1),
            sensor="SIM-RADAR",
        ),
    )


CENTRAL_BALTIC = (54.7, 13.2, 57.3, 19.8)  # inside the reference policy's ROE and DEU areas


def _area(rng: random.Random) -> list[GeoPoint]:
    south, west, north, east = CENTRAL_BALTIC
    lat, lon = rng.uniform(south, north - 0.2), rng.uniform(west, east - 0.2)
    return [
        GeoPoint(lat=round(lat, 4), lon=round(lon, 4)),
        GeoPoint(lat=round(lat, 4), lon=round(lon + 0.2, 4)),
        GeoPoint(lat=round(lat + 0.2, 4), lon=round(lon + 0.1, 4)),
    ]


def _candidate(
    policy: CompiledPolicy,
    rng: random.Random,
    now: datetime,
    want: Verdict,
    favoured_issuer: str | None,
) -> tuple[str, str, str]:
    """(issuer, target, kind) likely to get ``want``; the caller checks with the policy."""
    holders = sorted({g.holder for grants in policy.grants.values() for g in grants})
    issuer = (
        favoured_issuer
        if favoured_issuer in policy.units and rng.random() < 0.5
        else rng.choice(holders)
    )
    commanded = sorted(
        target
        for target, grants in policy.grants.items()
        if any(g.holder == issuer and g.window.contains(now) for g in grants)
    )
    if want is Verdict.DENY or not commanded:
        outside = sorted(u for u in policy.units if u != issuer and u not in commanded)
        kinds = sorted(k for k, spec in policy.kinds.items() if not spec.approvals)
        return issuer, rng.choice(outside), rng.choice(kinds)
    held = sorted(k for k, spec in policy.kinds.items() if spec.approvals)
    plain = sorted(
        k for k, spec in policy.kinds.items() if not spec.approvals and not spec.roe_action
    )
    kinds = held if want is Verdict.HOLD and held else plain
    return issuer, rng.choice(commanded), rng.choice(kinds)


def next_directive(
    evaluator: PolicyEvaluator,
    rng: random.Random,
    now: datetime,
    source: str,
    seq: int,
    *,
    deny_ratio: float = 0.3,
    hold_ratio: float = 0.1,
    favoured_issuer: str | None = None,
) -> DirectiveEvent:
    """A directive the policy will ALLOW, or with the given odds DENY or HOLD (for lack of
    approvals). Candidates are checked against the policy itself, so the mix holds for
    any policy that makes such directives possible."""
    roll = rng.random()
    want = (
        Verdict.DENY
        if roll < deny_ratio
        else Verdict.HOLD
        if roll < deny_ratio + hold_ratio
        else Verdict.ALLOW
    )
    event: DirectiveEvent | None = None
    for _ in range(50):
        issuer, target, kind = _candidate(evaluator.policy, rng, now, want, favoured_issuer)
        event = new_event(
            DirectiveEvent,
            id=f"{source}:directive:{seq}",
            source=source,
            time=now,
            classification=Classification.NATO_SECRET,
            releasableto="NATO",
            subject=target,
            data=DirectiveData(
                kind=kind,
                issuer=issuer,
                target=target,
                valid_from=now,
                expires=now + timedelta(hours=6),
                area=_area(rng),
                text=f"Simulated directive {seq}",
            ),
        )
        if evaluator.decide(event, now).verdict is want:
            break
    assert event is not None
    return event
