"""The console folds frames into a picture and summarises each in one readable line."""

from __future__ import annotations

from typing import Any

from c2bus.tools.console.picture import Picture


def frame(stream: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"op": "event", "stream": stream, "pos": "x/0/1", "event": event}


def test_lines_and_state(valid_example: Any) -> None:
    picture = Picture()
    hello = picture.apply(
        {"op": "welcome", "identity": {"sub": "a", "unit": "U", "nation": "DEU",
                                       "clearance": "NATO SECRET"}}
    )  # fmt: skip
    assert hello == "CONNECTED as a (U, DEU, NATO SECRET)"
    line = picture.apply(frame("sa", valid_example("sa-track")))
    assert line is not None and line.startswith("TRACK TRK-4711 HOSTILE AIR 54.3210,10.1230")
    assert "[NATO SECRET // NATO]" in line
    assert set(picture.tracks) == {"TRK-4711"}
    denial = valid_example("decision")
    line = picture.apply(frame("decisions", denial))
    assert line is not None and line.startswith("DECISION DENY d-2026-11-26-0001 MOVE")
    assert "command-relationship: JFC-BRUNSSUM holds no OPCON" in line
    assert picture.decisions[0]["id"] == denial["id"]
    assert picture.counts == {"sa": 1, "decisions": 1}
    assert picture.identity == {
        "sub": "a",
        "unit": "U",
        "nation": "DEU",
        "clearance": "NATO SECRET",
    }
