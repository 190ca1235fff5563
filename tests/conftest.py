"""Shared test helpers: paths and example documents."""

from __future__ import annotations

import json
import os
import shutil
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


def require_tool(name: str) -> str:
    """The path of a system tool a test needs (``prometheus``, ``promtool``).

    ``make test`` installs Debian's ``prometheus`` package where it can (root with
    apt-get). Without the tool a local run skips the test and says why; under CI
    (``CI=true``) it fails instead, so a missing install step never passes as green."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package prometheus: make prometheus)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path
