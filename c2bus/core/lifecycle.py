"""A directive's lifecycle as a state machine: which step may follow which, and the state
that the steps on the status topic, read in Kafka order, leave it in.

    DECIDED → DELIVERED → WILCO → HAVE_DO
                        ↘ CANTCO
    EXPIRED once its validity ends, from any state but CANTCO and HAVE_DO

- ``DECIDED`` is the enforcer's, in its decision's transaction; ``DELIVERED`` a gateway's,
  once a console of the target was sent the directive; neither is an answer, so either
  arriving after the state moved on changes nothing (several consoles are delivered to;
  the topics are read side by side).
- ``WILCO`` and ``CANTCO`` are the target unit's answer: one answer stands, the first. An
  approved directive may be answered before its DELIVERED step is read back (the console
  answers as soon as it has it).
- ``HAVE_DO`` only after ``WILCO``, once.
- ``EXPIRED`` is written (by a gateway) when the directive's ``expires`` passed before it
  reached CANTCO or HAVE_DO.

Steps are folded in the order of the status topic (keyed by directive id: one partition,
one order), the first legal step winning, so every reader that reads the same records
gets the same state, whichever gateway wrote which step.
"""

from __future__ import annotations

from datetime import datetime

from c2bus.core.events import DirectiveState

S = DirectiveState
#: No step changes a directive that reached one of these.
FINAL = frozenset({S.CANTCO, S.HAVE_DO, S.EXPIRED})
#: The steps a console of the target unit writes.
ANSWERS = frozenset({S.WILCO, S.CANTCO, S.HAVE_DO})
#: The steps that only tell of progress: never refused, never a change once it moved on.
PROGRESS = frozenset({S.DECIDED, S.DELIVERED})
_ORDER = {S.DECIDED: 0, S.DELIVERED: 1}


def refusal(
    state: DirectiveState | None,
    step: DirectiveState,
    expires: datetime | None = None,
    now: datetime | None = None,
) -> str | None:
    """Why ``step`` may not follow ``state`` (None: no step read yet, the directive just
    decided), or None when it may. ``expires`` and ``now`` judge an EXPIRED step (one
    before ``expires`` is refused) and an answer (none from ``expires`` on); without
    them time is not judged."""
    current = state or S.DECIDED
    if step in PROGRESS:
        return None
    if current in FINAL:
        return f"the directive is {current.value} already"
    if expires is not None and now is not None:
        if step is S.EXPIRED and now < expires:
            return f"the directive is valid until {expires.isoformat()}"
        if step is not S.EXPIRED and now >= expires:
            return f"the directive expired at {expires.isoformat()}"
    if step is S.EXPIRED:
        return None
    if step is S.HAVE_DO:
        return None if current is S.WILCO else "HAVE_DO follows WILCO only"
    if current is S.WILCO:
        return "the directive was answered WILCO already"
    return None


def advance(
    state: DirectiveState | None,
    step: DirectiveState,
    expires: datetime | None = None,
    now: datetime | None = None,
) -> DirectiveState | None:
    """The state after ``step`` is read, or None when it is not a legal step there (it
    changes nothing: a later, conflicting answer; a repeated one)."""
    if refusal(state, step, expires, now) is not None:
        return None
    if step in PROGRESS:
        if state is None or (state in _ORDER and _ORDER[step] > _ORDER[state]):
            return step
        return state
    return step
