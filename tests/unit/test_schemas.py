"""The published JSON Schemas match the code, and the examples prove both agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker

from c2bus.core.codec import decode_event
from c2bus.core.schemas import UNION_FILE, generate, render
from c2bus.errors import InvalidEvent
from tests.conftest import INVALID_EXAMPLES, ROOT, SCHEMAS, VALID_EXAMPLES, load

EXPECTED_ERRORS: dict[str, str] = load(SCHEMAS / "examples" / "invalid" / "expected-errors.json")
FORMATS = FormatChecker()


def validator(file_name: str) -> Draft202012Validator:
    schema = load(SCHEMAS / file_name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


def test_date_time_format_is_really_checked() -> None:
    # Without rfc3339-validator installed jsonschema silently skips "date-time".
    assert "date-time" in FORMATS.checkers
    assert not FORMATS.conforms("yesterday", "date-time")


def test_committed_schemas_are_exactly_what_the_code_generates() -> None:
    generated = {name: render(doc) for name, doc in generate().items()}
    committed = {p.name: p.read_text(encoding="utf-8") for p in SCHEMAS.glob("*.schema.json")}
    assert sorted(committed) == sorted(generated), "run `c2bus schemas export`"
    for name, text in generated.items():
        assert committed[name] == text, f"{name} is stale: run `c2bus schemas export`"


@pytest.mark.parametrize("path", VALID_EXAMPLES, ids=lambda p: p.stem)
def test_valid_examples_pass_schema_and_decoder(path: Path) -> None:
    doc = load(path)
    type_schema = f"{doc['type']}.schema.json"
    for file_name in (type_schema, UNION_FILE):
        errors = list(validator(file_name).iter_errors(doc))
        assert not errors, f"{path.name} fails {file_name}: {errors[0].message}"
    decode_event(path.read_bytes())


def test_every_invalid_example_has_an_expected_error_and_vice_versa() -> None:
    assert sorted(p.name for p in INVALID_EXAMPLES) == sorted(EXPECTED_ERRORS)
    assert len(INVALID_EXAMPLES) >= 3


@pytest.mark.parametrize("path", INVALID_EXAMPLES, ids=lambda p: p.stem)
def test_invalid_examples_are_rejected_with_a_precise_message(path: Path) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(path.read_bytes())
    assert str(err.value) == EXPECTED_ERRORS[path.name]
    # The schema agrees with the decoder: a published contract rejects it too.
    assert not validator(UNION_FILE).is_valid(load(path)), f"schema accepts {path.name}"


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("missing-classification", "classification"),
        ("missing-releasableto", "releasableto"),
        ("unknown-classification", "$.classification"),
        ("bad-time", "$.time"),
        ("time-without-offset", "$.time"),
    ],
)
def test_label_and_time_errors_name_the_field(name: str, field: str) -> None:
    assert field in EXPECTED_ERRORS[f"{name}.json"]


def test_type_schemas_reject_an_event_of_another_type(valid_example: Any) -> None:
    directive = valid_example("directive")
    assert not validator("c2bus.sa.track.v1.schema.json").is_valid(directive)


def test_examples_are_pretty_printed_json() -> None:
    for path in [*VALID_EXAMPLES, *INVALID_EXAMPLES]:
        assert path.read_text(encoding="utf-8") == json.dumps(load(path), indent=2) + "\n"


def test_reference_policy_validates_against_the_published_policy_schema() -> None:
    for path in (ROOT / "deploy" / "policies").glob("alliance*.yaml"):
        doc = yaml.safe_load(path.read_text())  # its timestamps are quoted: RFC 3339 strings
        errors = list(validator("c2bus-policy-document.schema.json").iter_errors(doc))
        assert not errors, f"{path.name}: {errors[0].message}"
