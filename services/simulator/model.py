"""Pure simulation: tracks moving in a box, and a stream of directives some of which the
chain-of-command policy must deny. Randomness comes from the caller's ``random.Random``."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ..domain.events import (
    DirectiveData,
    DirectiveEvent,
    StandardIdentity,
    TrackData,
    TrackDomain,
    TrackEvent,
)
from ..domain.fields import GeoPoint
from ..domain.labels import Classification
from ..domain.structure import CommandStructure

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
    return TrackEvent(
        specversion="1.0",
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
            course_deg=round(track.course_deg, 1),
            speed_mps=round(track.speed_mps, 1),
            sensor="SIM-RADAR",
        ),
    )


def next_directive(
    structure: CommandStructure,
    rng: random.Random,
    now: datetime,
    source: str,
    seq: int,
    *,
    deny_ratio: float = 0.3,
    favoured_issuer: str | None = None,
) -> DirectiveEvent:
    """A directive from a command to a unit: valid (issuer above target) or, with
    probability ``deny_ratio``, one the chain of command forbids."""
    deny = rng.random() < deny_ratio
    candidates = sorted(
        unit
        for unit in structure.units
        if (_outside(structure, unit) if deny else any(structure.subordinates(unit)))
    )
    if favoured_issuer in candidates and rng.random() < 0.5:
        issuer = favoured_issuer
    else:
        issuer = rng.choice(candidates)
    pool = _outside(structure, issuer) if deny else sorted(structure.subordinates(issuer))
    target = rng.choice(pool)
    return DirectiveEvent(
        specversion="1.0",
        id=f"{source}:directive:{seq}",
        source=source,
        time=now,
        classification=Classification.NATO_SECRET,
        releasableto="NATO",
        subject=target,
        data=DirectiveData(
            kind=rng.choice(KINDS),
            issuer=issuer,
            target=target,
            valid_from=now,
            expires=now + timedelta(hours=6),
            text=f"Simulated directive {seq}",
        ),
    )


def _outside(structure: CommandStructure, issuer: str) -> list[str]:
    """Units ``issuer`` may not direct: neither itself nor below it."""
    below = set(structure.subordinates(issuer))
    return sorted(u for u in structure.units if u != issuer and u not in below)
