"""The ingest lists the problems of a rejected body whatever its shape: a ``type`` that is
no string, or nesting deeper than a validator recurses, is a problem, not a crash."""

from __future__ import annotations

from c2bus.core.codec import EventDecoder
from c2bus.core.events import SaEvent
from c2bus.services.ingest.app import SA_TYPES
from c2bus.services.ingest.problems import Problem, ProblemFinder, problems_of

FINDER = ProblemFinder(SA_TYPES)
DECODER: EventDecoder[SaEvent] = EventDecoder(SaEvent)


def test_a_type_that_is_no_string_is_a_problem_at_type() -> None:
    for wrong in ({}, [], 3, None):
        [problem] = FINDER.find({"type": wrong}, "invalid")
        assert problem.path == "$.type" and "must be one of" in problem.message


def test_nesting_too_deep_to_validate_is_one_problem() -> None:
    deep = b'{"type": "c2bus.sa.track.v1", "data": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert problems_of(FINDER, DECODER, deep, batch=False, message="invalid") == [
        Problem("$", "nested too deeply to be an event")
    ]
    assert problems_of(FINDER, DECODER, b"[" * 10_000 + b"]" * 10_000, batch=True, message="x") == [
        Problem("$", "nested too deeply to be an event")
    ]
