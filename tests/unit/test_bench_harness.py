"""The benchmark harness itself (not the figures): it runs scenarios, prints one table,
writes results.json, and refuses unknown scenarios. The in-process scenarios (decode,
policy) run here in their quick form; the Kafka ones run under ``make bench``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.core import Result
from loadtests.harness import main, plot, table


def test_a_quick_run_prints_the_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--quick", "--only", "decode,policy", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "results.json").read_text())
    scenarios = [r["scenario"] for r in doc["results"]]
    assert scenarios == [
        "decode + validate, SA track",
        "decode + validate, directive",
        "policy evaluation",
    ]
    for row in doc["results"]:
        assert row["ratio"] > 0 and row["met"] in (True, False)
        assert row["scenario"] in out
    assert doc["machine"]["cpus"] and doc["machine"]["python"]
    assert "orjson.loads" in out and "hand-written function" in out


def test_unknown_scenarios_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--only", "nope"])
    assert exited.value.code == 2
    assert "unknown scenario nope" in capsys.readouterr().err


def test_the_table_shows_ratio_goal_and_verdict() -> None:
    rows = [
        Result("a", "1 /s", "base 2 /s", 0.5, "of base", ">= 0.70", False),
        Result("b", "3 KB", "base 1 KB", None, "", "<= 50 KB", True),
        Result("c", "5 /s", "base 5 /s", 1.0, "x", "report", None),
    ]
    lines = table(rows).splitlines()
    assert lines[0].split()[:2] == ["scenario", "ours"]
    assert lines[2].endswith("NO") and "0.50 of base" in lines[2]
    assert lines[3].endswith("yes") and "—" in lines[3]
    assert lines[4].endswith("—")


def test_plots_are_drawn_from_latency_samples(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="make bench installs it")

    result = Result("e2e latency", "1 ms", "2 ms", 0.5, "x", "<= 1", True)
    result.samples = {"ours": [1.0, 2.0, 3.0, 50.0], "baseline": [2.0, 4.0]}
    [path] = plot([result], tmp_path)
    assert path.name == "e2e-latency.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
