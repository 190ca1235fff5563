"""The simulator's model: tracks stay in their box and move; directives mix allow and deny."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from services.domain.codec import decode_event, encode_event
from services.domain.events import Verdict
from services.domain.structure import ChainOfCommandPolicy, CommandStructure
from services.simulator.model import DEFAULT_BOX, initial_tracks, next_directive, step, track_event
from tests.unit.test_structure import STRUCTURE_FILE

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def test_tracks_move_and_stay_in_the_box() -> None:
    rng = random.Random(7)
    tracks = initial_tracks(40, rng)
    south, west, north, east = DEFAULT_BOX
    moved = tracks
    for _ in range(500):
        moved = [step(t, 60.0) for t in moved]
    for before, after in zip(tracks, moved, strict=True):
        assert south <= after.lat <= north
        assert west <= after.lon <= east
        assert (before.lat, before.lon) != (after.lat, after.lon)
        assert 0 <= after.course_deg < 360


def test_track_events_are_valid_contracts() -> None:
    track = initial_tracks(1, random.Random(1))[0]
    event = track_event(track, NOW, "urn:test", 3)
    assert decode_event(encode_event(event)) == event
    assert event.key() == track.track_id


def test_directives_include_denials_the_policy_catches() -> None:
    structure = CommandStructure.load(STRUCTURE_FILE.read_bytes())
    policy = ChainOfCommandPolicy(structure)
    rng = random.Random(3)
    verdicts = [
        policy.decide(next_directive(structure, rng, NOW, "urn:test", i), NOW).verdict
        for i in range(200)
    ]
    denied = verdicts.count(Verdict.DENY) / len(verdicts)
    assert 0.15 < denied < 0.45
