"""``c2bus policy …``: validate, publish, show and dry-run alignment policies."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from c2bus.adapters.policy_store import history, latest_versions, publish, recorded_directives
from c2bus.adapters.settings import KafkaSettings, ServiceSettings
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import EventDecoder
from c2bus.core.decision import Approval
from c2bus.core.events import DirectiveEvent
from c2bus.core.labels import Classification
from c2bus.core.policy.compiler import (
    PolicyInvalid,
    compile_policy,
    content_hash,
    load_policy_document,
)
from c2bus.core.policy.evaluator import DirectiveContext, PolicyEvaluator
from c2bus.core.policy.model import PolicyDocument
from c2bus.errors import C2BusError, InvalidEvent
from c2bus.services.policy_api.shadow import ShadowReport, shadow

DIRECTIVES: EventDecoder[DirectiveEvent] = EventDecoder(DirectiveEvent)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise C2BusError(f"cannot read {path}: {exc.strerror}") from exc


def _document(path: str) -> PolicyDocument:
    """Parse and validate a policy file, printing every problem before failing."""
    try:
        doc = load_policy_document(_read(path))
        compile_policy(doc)
    except PolicyInvalid as exc:
        for issue in exc.issues:
            print(f"{path}: {issue}", file=sys.stderr)
        raise C2BusError(f"{path}: {len(exc.issues)} problem(s); nothing published") from exc
    return doc


def cmd_validate(args: argparse.Namespace) -> int:
    doc = _document(args.file)
    print(
        f"{args.file}: valid policy {doc.policy_set_id} version {doc.version} "
        f"({len(doc.units)} units, {len(doc.kinds)} kinds, {len(doc.transfers)} transfers, "
        f"{len(doc.caveats)} caveats, {len(doc.rules_of_engagement)} ROE rules) "
        f"{content_hash(doc)}"
    )
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    doc = _document(args.file)
    kafka = KafkaSettings.from_env()
    topic = TopicNames(kafka.topic_prefix).policy

    async def run() -> int:
        current = (await latest_versions(kafka, topic)).get(doc.policy_set_id)
        if args.if_absent and current is not None:
            print(f"{doc.policy_set_id} version {current.data.version} is already published")
            return 0
        replaces = args.replaces if not args.if_absent else None
        event = await publish(kafka, topic, doc, replaces, "urn:c2bus:cli")
        print(f"published {doc.policy_set_id} version {event.data.version} to {topic}")
        return 0

    return asyncio.run(run())


def cmd_show(args: argparse.Namespace) -> int:
    kafka = KafkaSettings.from_env()
    topic = TopicNames(kafka.topic_prefix).policy
    latest = asyncio.run(latest_versions(kafka, topic))
    if args.set:
        latest = {k: v for k, v in latest.items() if k == args.set}
    if not latest:
        print(f"no policy published on {topic}")
        return 3
    for set_id, event in sorted(latest.items()):
        print(
            f"{set_id} version {event.data.version} (replaces {event.data.replaces}) "
            f"published {event.time.isoformat()} {content_hash(event.data.document)}"
        )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    kafka = KafkaSettings.from_env()
    set_id = args.set or ServiceSettings.from_env("enforcer").policy_set_id
    versions = asyncio.run(history(kafka, TopicNames(kafka.topic_prefix).policy, set_id))
    if not versions:
        print(f"no version of {set_id} was ever published")
        return 3
    for event in versions:
        print(
            f"{set_id} version {event.data.version} (replaces {event.data.replaces}) "
            f"published {event.time.isoformat()} by {event.source} "
            f"{content_hash(event.data.document)}"
        )
    return 0


def _approval(text: str, directive: DirectiveEvent) -> Approval:
    """``SUBJECT:NATION:ROLES``, taken as cleared for the directive, or
    ``SUBJECT:NATION:ROLES:CLEARANCE``."""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise C2BusError(f"--approval {text!r}: use SUBJECT:NATION:ROLE[,ROLE][:CLEARANCE]")
    subject, nation, roles = parts[:3]
    try:
        clearance = Classification(parts[3]) if len(parts) == 4 else directive.classification
    except ValueError:
        known = ", ".join(c.value for c in Classification)
        raise C2BusError(f"--approval {text!r}: clearance must be one of {known}") from None
    return Approval(subject, nation, frozenset(roles.split(",")), clearance)


def cmd_dry_run(args: argparse.Namespace) -> int:
    if args.policy:
        doc = _document(args.policy)
    else:
        kafka = KafkaSettings.from_env()
        set_id = args.set or ServiceSettings.from_env("enforcer").policy_set_id
        latest = asyncio.run(latest_versions(kafka, TopicNames(kafka.topic_prefix).policy))
        if set_id not in latest:
            raise C2BusError(f"no version of {set_id} is published: give --policy FILE")
        doc = latest[set_id].data.document
    try:
        directive = DIRECTIVES.decode_event(_read(args.directive))
    except InvalidEvent as exc:
        raise C2BusError(f"{args.directive}: not a valid directive: {exc}") from exc
    now = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    if now.tzinfo is None:
        raise C2BusError("--at needs a UTC offset, e.g. 2026-11-26T08:00:00Z")
    approvals = frozenset(_approval(a, directive) for a in args.approval)
    decision = PolicyEvaluator(compile_policy(doc)).evaluate(
        directive, DirectiveContext(now, approvals)
    )
    print(
        json.dumps(
            {
                "directive": directive.id,
                "verdict": decision.verdict.value,
                "reasons": [{"rule": r.rule, "message": r.message} for r in decision.reasons],
                "policy_set_id": decision.policy_set_id,
                "policy_version": decision.policy_version,
                "policy_hash": decision.policy_hash,
                "at": now.isoformat(),
            },
            indent=2,
        )
    )
    return 0


def cmd_shadow(args: argparse.Namespace) -> int:
    candidate = PolicyEvaluator(compile_policy(_document(args.file)))
    kafka = KafkaSettings.from_env()
    topics = TopicNames(kafka.topic_prefix)

    async def run() -> ShadowReport:
        latest = await latest_versions(kafka, topics.policy)
        set_id = candidate.policy.policy_set_id
        if set_id not in latest:
            raise C2BusError(f"no version of {set_id} is published to compare with")
        current = PolicyEvaluator(compile_policy(latest[set_id].data.document))
        directives = await recorded_directives(kafka, topics.submitted, args.last)
        return shadow(directives, current, candidate)

    report = asyncio.run(run())
    print(
        f"{report.directives} recorded directives re-decided: version {report.current_version} "
        f"(in force) against {report.candidate_version} (candidate); "
        f"{len(report.changed)} verdict(s) would change"
    )
    for change in report.changed:
        print(
            f"  {change.directive_id}  {change.kind} {change.issuer} -> {change.target}: "
            f"{change.current} -> {change.candidate}  {'; '.join(change.reasons)}"
        )
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = commands.add_parser("policy", help="alignment policies: validate, publish, dry-run")
    verbs = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = verbs.add_parser("validate", help="check a policy file; list every problem")
    p.add_argument("file")
    p.set_defaults(func=cmd_validate)
    p = verbs.add_parser("push", help="publish a policy file as the next version")
    p.add_argument("file")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--replaces", type=int, metavar="N", help="the version this one replaces (optimistic)"
    )
    group.add_argument(
        "--if-absent", action="store_true", help="publish only if no version is published yet"
    )
    p.set_defaults(func=cmd_push)
    p = verbs.add_parser("show", help="the current version of each published policy set")
    p.add_argument("--set", default=None, help="only this policy set id")
    p.set_defaults(func=cmd_show)
    p = verbs.add_parser("history", help="every version ever published of a policy set")
    p.add_argument("--set", default=None, help="policy set id (default C2BUS_POLICY_SET)")
    p.set_defaults(func=cmd_history)
    p = verbs.add_parser("dry-run", help="decide one directive without publishing anything")
    p.add_argument("--directive", required=True, help="a directive event (JSON file)")
    p.add_argument("--policy", default=None, help="a candidate policy file (default: current)")
    p.add_argument("--set", default=None, help="policy set id (default C2BUS_POLICY_SET)")
    p.add_argument("--at", default=None, help="evaluation time, RFC 3339 (default: now)")
    p.add_argument(
        "--approval",
        action="append",
        default=[],
        metavar="SUBJECT:NATION:ROLES[:CLEARANCE]",
        help="an approval to assume, e.g. alice:GBR:approver (repeatable); the approver is "
        "taken as cleared for the directive unless CLEARANCE says otherwise, e.g. "
        "'bob:USA:approver:NATO CONFIDENTIAL'",
    )
    p.set_defaults(func=cmd_dry_run)
    p = verbs.add_parser(
        "shadow", help="re-decide recorded directives under a candidate; show what changes"
    )
    p.add_argument("file", help="the candidate policy")
    p.add_argument("--last", type=int, default=1000, help="directives per partition (1000)")
    p.set_defaults(func=cmd_shadow)
