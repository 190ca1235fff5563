"""The directive lifecycle: which step may follow which, and the state the status topic's
steps leave a directive in when read in order (the first legal answer stands)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from c2bus.core.events import DirectiveState
from c2bus.core.lifecycle import advance, refusal

S = DirectiveState
NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def fold(*steps: DirectiveState, expires: datetime = LATER, at: datetime = NOW) -> S | None:
    state: S | None = None
    for step in steps:
        state = advance(state, step, expires, at) or state
    return state


def test_the_way_through() -> None:
    assert fold(S.DECIDED) is S.DECIDED
    assert fold(S.DECIDED, S.DELIVERED) is S.DELIVERED
    assert fold(S.DECIDED, S.DELIVERED, S.WILCO) is S.WILCO
    assert fold(S.DECIDED, S.DELIVERED, S.WILCO, S.HAVE_DO) is S.HAVE_DO
    assert fold(S.DECIDED, S.DELIVERED, S.CANTCO) is S.CANTCO


@pytest.mark.parametrize(
    ("before", "step", "why"),
    [
        ((S.DECIDED, S.DELIVERED), S.HAVE_DO, "HAVE_DO follows WILCO only"),
        ((S.DECIDED, S.WILCO, S.HAVE_DO), S.HAVE_DO, "the directive is HAVE_DO already"),
        ((S.DECIDED, S.CANTCO), S.WILCO, "the directive is CANTCO already"),
        ((S.DECIDED, S.WILCO), S.CANTCO, "the directive was answered WILCO already"),
        ((S.DECIDED, S.WILCO), S.WILCO, "the directive was answered WILCO already"),
        ((S.DECIDED,), S.EXPIRED, "the directive is valid until 2026-12-03T13:00:00+00:00"),
    ],
)
def test_illegal_steps_are_refused_with_the_reason_and_change_nothing(
    before: tuple[S, ...], step: S, why: str
) -> None:
    state = fold(*before)
    assert refusal(state, step, LATER, NOW) == why
    assert advance(state, step, LATER, NOW) is None
    assert fold(*before, step) is state


def test_the_first_answer_stands_whichever_console_gave_it() -> None:
    assert fold(S.DECIDED, S.DELIVERED, S.WILCO, S.CANTCO) is S.WILCO
    assert fold(S.DECIDED, S.DELIVERED, S.CANTCO, S.WILCO, S.HAVE_DO) is S.CANTCO


def test_progress_steps_read_late_or_repeated_change_nothing() -> None:
    # an answer before the DECIDED or DELIVERED step is read (the topics are read side by side)
    assert fold(S.WILCO, S.DECIDED, S.DELIVERED) is S.WILCO
    assert fold(S.DELIVERED, S.DECIDED) is S.DELIVERED
    assert fold(S.DECIDED, S.DELIVERED, S.DELIVERED) is S.DELIVERED
    assert fold(S.DECIDED, S.CANTCO, S.DELIVERED) is S.CANTCO
    assert refusal(S.HAVE_DO, S.DELIVERED) is None  # never refused: it only tells of progress


def test_expiry() -> None:
    after = LATER + timedelta(seconds=1)
    for before in [(S.DECIDED,), (S.DECIDED, S.DELIVERED), (S.DECIDED, S.WILCO)]:
        assert fold(*before, S.EXPIRED, at=after) is S.EXPIRED
    assert fold(S.DECIDED, S.EXPIRED, at=LATER) is S.EXPIRED  # expires is the first instant
    for final in (S.CANTCO, S.HAVE_DO):  # an answered, done directive does not expire
        assert advance(final, S.EXPIRED, LATER, after) is None
    assert refusal(S.CANTCO, S.EXPIRED, LATER, after) == "the directive is CANTCO already"
    # no answer once the validity ended; nothing after EXPIRED
    assert refusal(S.DELIVERED, S.WILCO, LATER, after) == (
        "the directive expired at 2026-12-03T13:00:00+00:00"
    )
    assert refusal(S.WILCO, S.HAVE_DO, LATER, after) is not None
    assert refusal(S.EXPIRED, S.WILCO, LATER, NOW) == "the directive is EXPIRED already"
    # without a clock time is not judged
    assert refusal(S.DELIVERED, S.WILCO) is None
    assert refusal(S.DELIVERED, S.EXPIRED) is None
