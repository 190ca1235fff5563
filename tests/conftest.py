"""Shared test helpers: paths and example documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401
import pytest

# Imported here, at the top of the stack: left to the hypothesis plugin's end-of-session
# summary (a run without property tests), the deep import trips a CPython 3.11 parser bug
# under pytest's assertion rewriting ("AST constructor recursion depth mismatch").

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
VALID_EXAMPLES = sorted((SCHEMAS / "examples" / "valid").glob("*.json"))
INVALID_EXAMPLES = sorted(
    p for p in (SCHEMAS / "examples" / "invalid").glob("*.json") if p.name != "expected-errors.json"
)


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def valid_example() -> Any:
    """Return a fresh copy of a valid example by name (e.g. ``sa-track``)."""

    def _get(name: str) -> Any:
        return load(SCHEMAS / "examples" / "valid" / f"{name}.json")

    return _get
