"""Security labels: classification order, releasability parsing, and the fail-closed check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from c2bus.core.labels import (
    NATO_MEMBERS,
    Classification,
    SecurityLabel,
    parse_releasability,
)

LEVELS = list(Classification)
NATIONS = [*sorted(NATO_MEMBERS), "AUS", "JPN", "NZL", "UKR"]


def test_levels_are_ordered_from_unclassified_to_cosmic_top_secret() -> None:
    assert [c.value for c in LEVELS] == [
        "NATO UNCLASSIFIED",
        "NATO RESTRICTED",
        "NATO CONFIDENTIAL",
        "NATO SECRET",
        "COSMIC TOP SECRET",
    ]
    assert Classification.NATO_SECRET.dominated_by(Classification.COSMIC_TOP_SECRET)
    assert Classification.NATO_SECRET.dominated_by(Classification.NATO_SECRET)
    assert not Classification.NATO_SECRET.dominated_by(Classification.NATO_CONFIDENTIAL)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("NATO", {"NATO"}), ("DEU", {"DEU"}), ("DEU,FRA,NATO", {"DEU", "FRA", "NATO"})],
)
def test_releasability_parses_nations_and_nato(value: str, expected: set[str]) -> None:
    assert parse_releasability(value) == expected


@pytest.mark.parametrize(
    "value", ["", "nato", "DE", "DEU, FRA", "DEU,", ",DEU", "DEU;FRA", "EUROPE"]
)
def test_malformed_releasability_is_rejected_with_the_value_named(value: str) -> None:
    with pytest.raises(ValueError, match="invalid releasability"):
        parse_releasability(value)


def test_nato_marking_releases_to_members_only() -> None:
    label = SecurityLabel(Classification.NATO_RESTRICTED, frozenset({"NATO"}))
    assert label.allows(Classification.NATO_RESTRICTED, "NOR")
    assert not label.allows(Classification.COSMIC_TOP_SECRET, "AUS")  # partner, not member


def test_named_partner_nation_is_released_to() -> None:
    label = SecurityLabel(Classification.NATO_SECRET, frozenset({"NATO", "AUS"}))
    assert label.allows(Classification.NATO_SECRET, "AUS")
    assert not label.allows(Classification.NATO_CONFIDENTIAL, "AUS")  # clearance too low


def test_national_release_excludes_other_members() -> None:
    label = SecurityLabel(Classification.NATO_UNCLASSIFIED, frozenset({"DEU", "FRA"}))
    assert label.allows(Classification.NATO_UNCLASSIFIED, "FRA")
    assert not label.allows(Classification.COSMIC_TOP_SECRET, "USA")


@given(
    level=st.sampled_from(LEVELS),
    clearance=st.sampled_from(LEVELS),
    markings=st.sets(st.sampled_from([*NATIONS, "NATO"]), min_size=1, max_size=5),
    nation=st.one_of(st.sampled_from(NATIONS), st.text(max_size=4)),
)
def test_allows_never_exceeds_clearance_or_release(
    level: Classification, clearance: Classification, markings: set[str], nation: str
) -> None:
    label = SecurityLabel(level, frozenset(markings))
    allowed = label.allows(clearance, nation)
    cleared = level.rank <= clearance.rank
    released = nation in markings or ("NATO" in markings and nation in NATO_MEMBERS)
    assert allowed == (cleared and released)


def test_the_nations_nato_releases_to_are_the_ones_the_docs_list() -> None:
    text = (Path(__file__).parents[2] / "docs" / "events.md").read_text(encoding="utf-8")
    listed = re.search(r"the 32 NATO member nations \(.*?\):(.*?)\. A partner", text, re.S)
    assert listed is not None
    nations = {n.strip() for n in listed.group(1).split(",")}
    assert nations == NATO_MEMBERS and len(NATO_MEMBERS) == 32
