"""The simulator's model: tracks stay in their box and move; directives mix allow and deny
and are submitted by their issuer's command post."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime

from c2bus.core.codec import decode_event, encode_event
from c2bus.core.events import Verdict
from c2bus.core.policy.compiler import load_policy
from c2bus.core.policy.evaluator import PolicyEvaluator
from c2bus.core.protocol import COMMANDER_ROLE, Submit, parse_client_message
from c2bus.tools.simulator.model import (
    DEFAULT_BOX,
    initial_tracks,
    next_directive,
    step,
    track_event,
)
from c2bus.tools.simulator.posts import post_identity, submit_message
from tests.unit.test_policy import POLICY_FILE

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


def test_directives_mix_allow_deny_and_hold_as_the_policy_decides() -> None:
    evaluator = PolicyEvaluator(load_policy(POLICY_FILE.read_bytes()))
    rng = random.Random(3)
    events = [next_directive(evaluator, rng, NOW, "urn:test", i) for i in range(300)]
    verdicts = [evaluator.decide(e, NOW).verdict for e in events]
    assert 0.2 < verdicts.count(Verdict.DENY) / len(verdicts) < 0.4
    assert 0.04 < verdicts.count(Verdict.HOLD) / len(verdicts) < 0.2
    assert 0.5 < verdicts.count(Verdict.ALLOW) / len(verdicts) < 0.75
    assert all(decode_event(encode_event(e)) == e for e in events[:20])
    by_chance = sum(e.data.issuer == "JFC-BRUNSSUM" for e in events) / len(events)
    assert by_chance < 0.2  # one issuer among many unless favoured
    asked = [
        next_directive(evaluator, rng, NOW, "urn:test", i, favoured_issuer="JFC-BRUNSSUM")
        for i in range(100)
    ]
    assert sum(e.data.issuer == "JFC-BRUNSSUM" for e in asked) / len(asked) > 0.4


def test_a_course_just_short_of_north_is_reported_as_north() -> None:
    [track] = initial_tracks(1, random.Random(3))
    almost_north = dataclasses.replace(track, course_deg=359.96)
    event = decode_event(encode_event(track_event(almost_north, NOW, "urn:test", 1)))
    assert event.data.course_deg == 0.0  # type: ignore[union-attr]


def test_a_post_submits_its_units_directive_as_any_console_would() -> None:
    """The simulator writes no directive to Kafka: its issuer's command post submits it
    over the gateway's documented request, as a commander of that unit."""
    evaluator = PolicyEvaluator(load_policy(POLICY_FILE.read_bytes()))
    directive = next_directive(evaluator, random.Random(5), NOW, "urn:test", 1)
    request = parse_client_message(submit_message(directive, "d1"))
    assert isinstance(request, Submit)
    assert (request.id, request.directive_id) == ("d1", directive.id)
    assert (request.classification, request.releasableto) == (
        directive.classification,
        directive.releasableto,
    )
    data = directive.data
    body = request.directive
    assert (body.kind, body.target, body.expires, body.area, body.text) == (
        data.kind,
        data.target,
        data.expires,
        data.area,
        data.text,
    )
    post = post_identity(data.issuer, "DEU")
    assert post.unit == data.issuer and post.has_role(COMMANDER_ROLE)
    assert post_identity("JFC-BRUNSSUM", "NATO").nation == "NLD"  # a member's officer
