"""Validate a policy document and compile it into lookup tables, once per version.

Validation collects every problem with its JSON pointer before refusing, so an author fixes
a document in one pass. Compilation precomputes, for every unit, who holds which command
relationship over it and when (organic chain plus transfers of authority, inherited by the
commanders above the recipient and by the units below the transferred one).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from c2bus.core.codec import MALFORMED
from c2bus.core.policy.geo import Polygon
from c2bus.core.policy.model import (
    Caveat,
    Kind,
    PolicyDocument,
    Relationship,
    RoeRule,
    Unit,
    Window,
)
from c2bus.errors import PolicyError


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem in a policy document, located by JSON pointer."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


class PolicyInvalid(PolicyError):
    """A policy document that does not validate; ``issues`` lists every problem."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = issues
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(f"invalid policy: {issues[0]}{more}")


@dataclass(frozen=True, slots=True)
class Grant:
    """``holder`` holds ``relationship`` over a unit within ``window`` (from ``source``)."""

    holder: str
    relationship: Relationship
    window: Window
    source: str


@dataclass(frozen=True, slots=True)
class CompiledCaveat:
    caveat: Caveat
    units: frozenset[str] | None  # None: every unit of the nation
    forbidden: frozenset[str]
    red_card: frozenset[str]
    area: Polygon | None


@dataclass(frozen=True, slots=True)
class CompiledRoe:
    rule: RoeRule
    area: Polygon
    nations: frozenset[str]


@dataclass(frozen=True)
class CompiledPolicy:
    policy_set_id: str
    version: int
    content_hash: str
    document: PolicyDocument
    units: dict[str, Unit]
    superiors: dict[str, tuple[str, ...]]
    grants: dict[str, tuple[Grant, ...]]
    kinds: dict[str, Kind]
    caveats: dict[str, tuple[CompiledCaveat, ...]]
    roe: dict[str, tuple[CompiledRoe, ...]]
    relationships_for: dict[str, frozenset[Relationship]] = field(default_factory=dict)


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[['\"]?([^\]'\"]*)['\"]?\]")


def _pointer(path: str) -> str:
    """``$.units[3].parent`` → ``/units/3/parent``."""
    rest = path[1:] if path.startswith("$") else path
    return "".join(
        "/" + (m.group(1) or m.group(2) or m.group(3)) for m in _PATH_PART.finditer(rest)
    )


def canonical_bytes(doc: PolicyDocument) -> bytes:
    """The document as canonical JSON (fields and keys sorted): what the hash covers."""
    return msgspec.json.encode(doc, order="sorted")


def content_hash(doc: PolicyDocument) -> str:
    """``sha256:`` of the canonical JSON, so formatting and key order do not change it."""
    return "sha256:" + hashlib.sha256(canonical_bytes(doc)).hexdigest()


def load_policy_document(raw: bytes) -> PolicyDocument:
    """Parse YAML or JSON into the typed document; structural errors raise PolicyInvalid."""
    try:
        if raw.lstrip().startswith(b"{"):
            return msgspec.json.decode(raw, type=PolicyDocument)
        _refuse_aliases(raw)
        # YAML: quoted timestamps are strings there, so let them convert to datetimes.
        return msgspec.yaml.decode(raw, type=PolicyDocument, strict=False)
    except msgspec.ValidationError as exc:
        issues = _structural_issues(raw)
        if not issues:  # the schema is looser than the decoder somewhere: report the decoder
            reason, _, path = str(exc).partition(" - at `")
            issues = [PolicyIssue(_pointer(path.rstrip("`")), reason)]
        raise PolicyInvalid(issues) from exc
    except MALFORMED as exc:
        raise PolicyInvalid([PolicyIssue("", f"not YAML or JSON: {exc}")]) from exc
    except RecursionError as exc:
        raise PolicyInvalid([PolicyIssue("", "nested too deeply to be a policy")]) from exc


def _refuse_aliases(raw: bytes) -> None:
    """Refuse YAML anchors and aliases before anything is built: a few hundred bytes of
    nested aliases expand to gigabytes. The event stream names them without expanding."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        for event in yaml.parse(raw, Loader=loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise PolicyInvalid(
                    [PolicyIssue("", f"YAML anchors and aliases are not accepted (line {line})")]
                )
    except yaml.YAMLError as exc:
        raise PolicyInvalid([PolicyIssue("", f"not YAML or JSON: {exc}")]) from exc


def _structural_issues(raw: bytes) -> list[PolicyIssue]:
    """Every structural problem, via the document's JSON Schema (msgspec stops at one)."""
    try:
        doc = msgspec.to_builtins(msgspec.yaml.decode(raw))
    except MALFORMED:
        return []
    validator = Draft202012Validator(msgspec.json.schema(PolicyDocument))
    issues = []
    for found in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        err = best_match([found]) or found  # "not valid under any of" -> the branch that fits
        pointer = "".join(f"/{part}" for part in err.absolute_path)
        issues.append(PolicyIssue(pointer, _abridged(err.message)))
    return issues


#: A message quotes the value it is about; a long value is cut to its two ends.
MAX_MESSAGE = 240


def _abridged(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    end = MAX_MESSAGE // 2 - 2
    return f"{message[:end]} … {message[-end:]}"


def _window_issues(window: Window | None, pointer: str) -> Iterator[PolicyIssue]:
    if (
        window
        and window.valid_from
        and window.valid_until
        and window.valid_from >= window.valid_until
    ):
        yield PolicyIssue(pointer, "window is inverted or empty: valid_from >= valid_until")


def _overlap(a: Window, b: Window) -> bool:
    a_ends_first = a.valid_until is not None and b.valid_from is not None
    if a_ends_first and a.valid_until <= b.valid_from:  # type: ignore[operator]
        return False
    b_ends_first = b.valid_until is not None and a.valid_from is not None
    return not (b_ends_first and b.valid_until <= a.valid_from)  # type: ignore[operator]


def validate(doc: PolicyDocument) -> list[PolicyIssue]:
    """Every semantic problem of a structurally valid document."""
    issues: list[PolicyIssue] = []
    units: dict[str, Unit] = {}
    for i, unit in enumerate(doc.units):
        if unit.id in units:
            issues.append(PolicyIssue(f"/units/{i}/id", f"unit {unit.id} is listed twice"))
        units[unit.id] = unit
    for i, unit in enumerate(doc.units):
        if unit.parent is not None and unit.parent not in units:
            issues.append(PolicyIssue(f"/units/{i}/parent", f"unknown unit {unit.parent}"))
    for i, unit in enumerate(doc.units):
        seen = [unit.id]
        parent = unit.parent
        while parent is not None and parent in units:
            if parent in seen:
                chain = " -> ".join([*seen, parent])
                issues.append(
                    PolicyIssue(f"/units/{i}/parent", f"cycle in chain of command: {chain}")
                )
                break
            seen.append(parent)
            parent = units[parent].parent
    for i, toa in enumerate(doc.transfers):
        at = f"/transfers/{i}"
        if toa.unit not in units:
            issues.append(PolicyIssue(f"{at}/unit", f"unknown unit {toa.unit}"))
        if toa.to not in units:
            issues.append(PolicyIssue(f"{at}/to", f"unknown unit {toa.to}"))
        if toa.relationship is Relationship.COMMAND:
            issues.append(
                PolicyIssue(
                    f"{at}/relationship", "COMMAND is organic; transfer OPCON, TACON or ADCON"
                )
            )
        issues += _window_issues(toa.window, f"{at}/window")
        for j, other in enumerate(doc.transfers[:i]):
            same = other.unit == toa.unit and other.relationship == toa.relationship
            if same and other.to != toa.to and _overlap(other.window, toa.window):
                issues.append(
                    PolicyIssue(
                        f"{at}/window",
                        f"{toa.relationship.value} over {toa.unit} overlaps /transfers/{j} "
                        f"(to {other.to}): one holder at a time",
                    )
                )
    for name, kind in doc.kinds.items():
        if kind.roe_action and not any(
            r.action == kind.roe_action for r in doc.rules_of_engagement
        ):
            issues.append(
                PolicyIssue(
                    f"/kinds/{name}/roe_action", f"no rule of engagement for {kind.roe_action}"
                )
            )
    for i, caveat in enumerate(doc.caveats):
        at = f"/caveats/{i}"
        if caveat.unit is not None and caveat.unit not in units:
            issues.append(PolicyIssue(f"{at}/unit", f"unknown unit {caveat.unit}"))
        for field_name in ("forbidden_kinds", "red_card_kinds"):
            for k, name in enumerate(getattr(caveat, field_name)):
                if name not in doc.kinds:
                    issues.append(PolicyIssue(f"{at}/{field_name}/{k}", f"unknown kind {name}"))
        if caveat.allowed_area is not None and Polygon.of(caveat.allowed_area).area_deg2() == 0:
            issues.append(PolicyIssue(f"{at}/allowed_area", "area has no extent"))
        issues += _window_issues(caveat.window, f"{at}/window")
    for i, rule in enumerate(doc.rules_of_engagement):
        at = f"/rules_of_engagement/{i}"
        if Polygon.of(rule.area).area_deg2() == 0:
            issues.append(PolicyIssue(f"{at}/area", "area has no extent"))
        issues += _window_issues(rule.window, f"{at}/window")
    return issues


def compile_policy(doc: PolicyDocument, digest: str | None = None) -> CompiledPolicy:
    """Validate (raising :class:`PolicyInvalid` with every issue) and compile."""
    issues = validate(doc)
    if issues:
        raise PolicyInvalid(issues)
    digest = digest or content_hash(doc)
    units = {u.id: u for u in doc.units}
    superiors: dict[str, tuple[str, ...]] = {}
    for unit in doc.units:
        chain: list[str] = []
        parent = unit.parent
        while parent is not None:
            chain.append(parent)
            parent = units[parent].parent
        superiors[unit.id] = tuple(chain)
    subordinates: dict[str, list[str]] = {u: [] for u in units}
    for unit_id, above_all in superiors.items():
        for above in above_all:
            subordinates[above].append(unit_id)

    grants: dict[str, list[Grant]] = {u: [] for u in units}
    open_window = Window()
    for unit_id, above_all in superiors.items():
        for above in above_all:
            grants[unit_id].append(
                Grant(above, Relationship.COMMAND, open_window, "chain-of-command")
            )
    for toa in doc.transfers:
        holders = (toa.to, *superiors[toa.to])
        for unit_id in (toa.unit, *subordinates[toa.unit]):
            for holder in holders:
                grants[unit_id].append(Grant(holder, toa.relationship, toa.window, toa.id))

    caveats: dict[str, list[CompiledCaveat]] = {}
    for caveat in doc.caveats:
        scope = None
        if caveat.unit is not None:
            scope = frozenset((caveat.unit, *subordinates[caveat.unit]))
        area = Polygon.of(caveat.allowed_area) if caveat.allowed_area else None
        caveats.setdefault(caveat.nation, []).append(
            CompiledCaveat(
                caveat,
                scope,
                frozenset(caveat.forbidden_kinds),
                frozenset(caveat.red_card_kinds),
                area,
            )
        )
    roe: dict[str, list[CompiledRoe]] = {}
    for rule in doc.rules_of_engagement:
        roe.setdefault(rule.action, []).append(
            CompiledRoe(rule, Polygon.of(rule.area), frozenset(rule.nations))
        )
    return CompiledPolicy(
        policy_set_id=doc.policy_set_id,
        version=doc.version,
        content_hash=digest,
        document=doc,
        units=units,
        superiors=superiors,
        grants={u: tuple(g) for u, g in grants.items()},
        kinds=dict(doc.kinds),
        caveats={n: tuple(c) for n, c in caveats.items()},
        roe={a: tuple(r) for a, r in roe.items()},
        relationships_for={name: frozenset(k.permitted_by) for name, k in doc.kinds.items()},
    )


def load_policy(raw: bytes) -> CompiledPolicy:
    """Parse, validate and compile raw policy bytes (YAML or JSON)."""
    return compile_policy(load_policy_document(raw))
