"""The enforcer's decision state machine, without Kafka: every rule of
``c2bus.core.enforcement`` on inputs built from the published examples.

The policy here is scripted (not the alignment engine, whose own tests are test_policy.py):
MOVE is allowed, STRIKE denied, ENGAGE held until two approvals, anything expired denied, a
replay denied. What is under test is what the state machine does with those verdicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from c2bus.core.audit import START
from c2bus.core.codec import decode_event
from c2bus.core.decision import Approval, Decision, DirectivePolicy
from c2bus.core.enforcement import Enforcement, Step, Stream, Write
from c2bus.core.events import (
    DecisionEvent,
    DirectiveEvent,
    DirectiveState,
    DirectiveStatusEvent,
    Reason,
    Verdict,
)
from c2bus.core.held import SEEN_PREFIX, HeldRecord, SeenRecord
from c2bus.errors import PolicyError, UnverifiedRecord

NOW = datetime(2026, 11, 26, 8, tzinfo=UTC)
SOURCE, ACTOR = "urn:c2bus:enforcer:test", "enforcer:test"
#: every partition's audit chain as a lane set up on an empty decisions topic starts it
STARTS = {partition: START for partition in range(12)}


class ScriptedPolicy(DirectivePolicy):
    def __init__(self, version: int = 1) -> None:
        self.version = version
        self.calls: list[tuple[str, int, bool]] = []

    def decide(
        self,
        directive: DirectiveEvent,
        now: datetime,
        approvals: frozenset[Approval] = frozenset(),
        replay: bool = False,
    ) -> Decision:
        self.calls.append((directive.id, len(approvals), replay))
        kind = directive.data.kind
        if replay:
            verdict, reasons = Verdict.DENY, (Reason("replay", "seen before"),)
        elif directive.data.expires <= now:
            verdict, reasons = Verdict.DENY, (Reason("validity", "expired"),)
        elif kind == "STRIKE":
            verdict, reasons = Verdict.DENY, (Reason("roe", "no"), Reason("caveat", "no"))
        elif kind == "ENGAGE" and len(approvals) < 2:
            verdict, reasons = Verdict.HOLD, (Reason("approvals", "needs two"),)
        else:
            verdict, reasons = Verdict.ALLOW, ()
        digest = "sha256:" + f"{self.version:x}".rjust(64, "0")
        return Decision(verdict, reasons, "alliance", self.version, digest)


def directive(
    example: Any, directive_id: str, kind: str = "MOVE", expires: datetime | None = None
) -> bytes:
    doc = example("directive")
    doc["id"] = directive_id
    doc["data"]["kind"] = kind
    doc["data"]["expires"] = (expires or NOW + timedelta(hours=1)).isoformat()
    return json.dumps(doc).encode()


def approval(example: Any, directive_id: str, approver: str) -> bytes:
    doc = example("directive-approval")
    doc["id"] = f"approval-{directive_id}-{approver}"
    doc["data"]["directive_id"] = directive_id
    doc["data"]["approver"] = approver
    return json.dumps(doc).encode()


def attested(value: bytes, headers: Any) -> str | None:
    """The adapter's attestation check, standing in: every approval here is attested."""
    return None


def core(policy: DirectivePolicy | None = None) -> Enforcement:
    enforcement = Enforcement(
        policy or ScriptedPolicy(), source=SOURCE, actor=ACTOR, attest=attested
    )
    enforcement.restore([], STARTS)
    return enforcement


def to(step: Step, stream: Stream) -> list[Write]:
    return [w for w in step.writes if w.stream is stream]


def decisions(step: Step) -> list[DecisionEvent]:
    events = [decode_event(w.value or b"") for w in to(step, Stream.DECISIONS)]
    assert all(isinstance(e, DecisionEvent) for e in events)
    return events  # type: ignore[return-value]


@dataclass
class Record:
    """A held-topic record as Kafka would give it back."""

    key: bytes
    value: bytes | None
    partition: int
    offset: int = 0


def changelog(*steps: Step) -> list[Record]:
    """The held writes of ``steps``, at consecutive offsets per partition."""
    records = [
        Record(w.key, w.value, w.partition if w.partition is not None else -1)
        for step in steps
        for w in to(step, Stream.HELD)
    ]
    ends: dict[int, int] = {}
    for record in records:
        record.offset = ends.get(record.partition, 0)
        ends[record.partition] = record.offset + 1
    return records


def test_an_allowed_directive_is_decided_released_and_remembered(valid_example: Any) -> None:
    enforcement = core()
    step = enforcement.submitted(directive(valid_example, "d-1"), 3, 41, NOW)

    assert step.received == "c2bus.directive.v1"
    assert step.dead_letter is None
    [decision] = decisions(step)
    assert decision.id == "decision:d-1"
    assert decision.data.verdict is Verdict.ALLOW
    assert decision.data.policy_version == 1
    assert decision.time == NOW and decision.source == SOURCE
    [status] = [decode_event(w.value or b"") for w in to(step, Stream.STATUS)]
    assert isinstance(status, DirectiveStatusEvent)
    assert status.data.state is DirectiveState.DECIDED and status.data.actor == ACTOR
    [approved] = to(step, Stream.APPROVED)
    released = decode_event(approved.value or b"")
    assert isinstance(released, DirectiveEvent) and released.decisionid == "decision:d-1"
    assert approved.key == b"NLD-11AMB" and approved.kind == "c2bus.directive.v1"
    [seen] = to(step, Stream.HELD)
    assert seen.key == f"{SEEN_PREFIX}d-1".encode() and seen.partition == 3
    assert seen.kind is None
    assert [w.stream for w in step.writes] == [
        Stream.DECISIONS,
        Stream.STATUS,
        Stream.HELD,
        Stream.APPROVED,
    ]
    [decided] = step.decided
    assert decided.final and decided.approvals == 0
    assert enforcement.held.known("d-1") and len(enforcement.held) == 0


def test_a_denied_directive_is_not_released_and_cites_each_rule_once(
    valid_example: Any,
) -> None:
    step = core().submitted(directive(valid_example, "d-2", "STRIKE"), 0, 0, NOW)
    [decision] = decisions(step)
    assert decision.data.verdict is Verdict.DENY
    assert [r.rule for r in decision.data.reasons] == ["roe", "caveat"]
    assert to(step, Stream.APPROVED) == []
    assert step.decided[0].final


def test_a_held_directive_waits_for_approvals_then_is_released(valid_example: Any) -> None:
    policy = ScriptedPolicy()
    enforcement = core(policy)
    held = enforcement.submitted(directive(valid_example, "d-3", "ENGAGE"), 1, 10, NOW)
    [hold] = decisions(held)
    assert hold.data.verdict is Verdict.HOLD and hold.id == "decision:d-3:hold:0"
    [record] = to(held, Stream.HELD)
    assert record.key == b"d-3" and record.partition == 1
    assert not held.decided[0].final
    assert enforcement.held.get("d-3") is not None and len(enforcement.held) == 1

    first = enforcement.submitted(approval(valid_example, "d-3", "alice"), 1, 11, NOW)
    assert first.received == "c2bus.directive.approval.v1"
    [hold1] = decisions(first)
    assert hold1.data.verdict is Verdict.HOLD and hold1.id == "decision:d-3:hold:1"
    # the held record carries the approvals so far
    stored = msgspec.json.decode(to(first, Stream.HELD)[0].value or b"", type=HeldRecord)
    assert [a.approver for a in stored.approvals] == ["alice"]

    second = enforcement.submitted(approval(valid_example, "d-3", "bob"), 1, 12, NOW)
    [allow] = decisions(second)
    assert allow.data.verdict is Verdict.ALLOW and allow.id == "decision:d-3"
    tombstone, seen = to(second, Stream.HELD)
    assert (tombstone.key, tombstone.value, tombstone.partition) == (b"d-3", None, 1)
    assert seen.key == b"seen:d-3"
    assert len(to(second, Stream.APPROVED)) == 1
    assert second.decided[0].approvals == 2 and second.decided[0].final
    assert policy.calls == [("d-3", 0, False), ("d-3", 1, False), ("d-3", 2, False)]
    assert enforcement.held.get("d-3") is None and enforcement.held.known("d-3")


def test_the_same_approver_counts_once(valid_example: Any) -> None:
    enforcement = core()
    enforcement.submitted(directive(valid_example, "d-4", "ENGAGE"), 0, 0, NOW)
    enforcement.submitted(approval(valid_example, "d-4", "alice"), 0, 1, NOW)
    again = enforcement.submitted(approval(valid_example, "d-4", "alice"), 0, 2, NOW)
    assert decisions(again)[0].data.verdict is Verdict.HOLD
    assert again.decided[0].approvals == 1


def test_an_approval_of_nothing_held_is_dead_lettered(valid_example: Any) -> None:
    enforcement = core()
    step = enforcement.submitted(approval(valid_example, "d-none", "alice"), 0, 5, NOW)
    assert step.writes == [] and step.decided == []
    assert step.dead_letter is not None
    assert step.dead_letter.stage == "enforcer.approval"
    assert "d-none is not held" in str(step.dead_letter.error)
    assert step  # a dead letter is something to write


def test_only_attested_approvals_count(valid_example: Any) -> None:
    """An approval counts only when an edge that authenticated the approver attested it (the
    adapter checks the signature): anything else is dead-lettered with the reason, and
    without a check every approval is."""
    seen: list[Any] = []

    def attest(value: bytes, headers: Any) -> str | None:
        seen.append(headers)
        return None if headers == [("c2bus_sig", b"ok")] else "unsigned: no attestation"

    enforcement = Enforcement(ScriptedPolicy(), source=SOURCE, actor=ACTOR, attest=attest)
    enforcement.restore([], STARTS)
    enforcement.submitted(directive(valid_example, "d-7", "ENGAGE"), 0, 0, NOW, headers=[])
    assert seen == []  # directives need none: the enforcer decides them
    forged = enforcement.submitted(approval(valid_example, "d-7", "alice"), 0, 1, NOW, headers=[])
    assert forged.writes == [] and forged.decided == []
    assert forged.dead_letter is not None and forged.dead_letter.stage == "enforcer.approval"
    assert isinstance(forged.dead_letter.error, UnverifiedRecord)
    assert "unsigned: no attestation" in str(forged.dead_letter.error)
    held = enforcement.held.get("d-7")
    assert held is not None and held.approvals == frozenset()
    good = [("c2bus_sig", b"ok")]
    counted = enforcement.submitted(approval(valid_example, "d-7", "alice"), 0, 2, NOW, good)
    assert counted.decided[0].approvals == 1

    unchecked = Enforcement(ScriptedPolicy(), source=SOURCE, actor=ACTOR)
    unchecked.restore([], STARTS)
    unchecked.submitted(directive(valid_example, "d-8", "ENGAGE"), 0, 0, NOW)
    step = unchecked.submitted(approval(valid_example, "d-8", "alice"), 0, 1, NOW, good)
    assert step.dead_letter is not None and isinstance(step.dead_letter.error, UnverifiedRecord)
    assert "no trust store" in str(step.dead_letter.error)


@pytest.mark.parametrize(
    ("value", "message"),
    [(None, "record has no value"), (b"{", ""), (b'{"specversion": "1.0"}', "")],
)
def test_what_does_not_decode_is_dead_lettered(value: bytes | None, message: str) -> None:
    step = core().submitted(value, 0, 0, NOW)
    assert step.dead_letter is not None and step.dead_letter.stage == "enforcer.decode"
    assert message in str(step.dead_letter.error)
    assert step.writes == [] and step.received is None


def test_a_replay_is_denied_with_its_position_and_changes_nothing(valid_example: Any) -> None:
    policy = ScriptedPolicy()
    enforcement = core(policy)
    enforcement.submitted(directive(valid_example, "d-5"), 2, 7, NOW)
    replay = enforcement.submitted(directive(valid_example, "d-5"), 2, 9, NOW)
    [denial] = decisions(replay)
    assert denial.data.verdict is Verdict.DENY and denial.id == "decision:d-5:replay:2-9"
    assert to(replay, Stream.APPROVED) == [] and to(replay, Stream.HELD) == []
    assert replay.decided[0].replay_of == "2-9" and not replay.decided[0].final
    assert policy.calls[-1] == ("d-5", 0, True)


def test_a_copy_of_a_held_directive_is_a_replay_and_the_hold_stays(valid_example: Any) -> None:
    enforcement = core()
    enforcement.submitted(directive(valid_example, "d-6", "ENGAGE"), 0, 0, NOW)
    copy = enforcement.submitted(directive(valid_example, "d-6", "MOVE"), 0, 1, NOW)
    assert decisions(copy)[0].id == "decision:d-6:replay:0-1"
    assert enforcement.held.get("d-6") is not None


def test_a_tick_denies_expired_holds_and_forgets_expired_seen_ids(valid_example: Any) -> None:
    enforcement = core()
    soon = NOW + timedelta(minutes=1)
    enforcement.submitted(directive(valid_example, "held", "ENGAGE", soon), 0, 0, NOW)
    enforcement.submitted(directive(valid_example, "done", "MOVE", soon), 0, 1, NOW)
    enforcement.submitted(directive(valid_example, "later", "ENGAGE"), 0, 2, NOW)
    enforcement.submitted(directive(valid_example, "other", "ENGAGE", soon), 1, 0, NOW)

    vouched = enforcement.tick(0, NOW)  # nothing expired yet: only the chain's checkpoint
    assert [w.stream for w in vouched.writes] == [Stream.CHECKPOINTS]
    assert not enforcement.tick(0, NOW)  # nothing expired, nothing new to vouch for
    step = enforcement.tick(0, soon)
    [denial] = decisions(step)
    assert denial.data.directive_id == "held" and denial.data.verdict is Verdict.DENY
    assert to(step, Stream.APPROVED) == []
    keys = [(w.key, w.value is None) for w in to(step, Stream.HELD)]
    # the hold ends, its id is seen until it expires (now), and the expired marks go
    assert (b"held", True) in keys
    assert (b"seen:done", True) in keys
    assert (b"seen:held", True) in keys
    assert enforcement.held.get("held") is None
    assert not enforcement.held.known("done") and not enforcement.held.known("held")
    assert enforcement.held.get("later") is not None  # not expired
    assert enforcement.held.get("other") is not None  # another partition's


def test_state_restored_from_the_held_changelog_decides_the_same(valid_example: Any) -> None:
    first = core()
    steps = [
        first.submitted(directive(valid_example, "h", "ENGAGE"), 4, 0, NOW),
        first.submitted(approval(valid_example, "h", "alice"), 4, 1, NOW),
        first.submitted(directive(valid_example, "a"), 4, 2, NOW),
    ]
    second = core()
    assert second.restore(changelog(*steps), STARTS) == 1
    assert second.held.known("a")
    replay = second.submitted(directive(valid_example, "a"), 4, 3, NOW)
    assert decisions(replay)[0].id == "decision:a:replay:4-3"
    release = second.submitted(approval(valid_example, "h", "bob"), 4, 4, NOW)
    assert decisions(release)[0].data.verdict is Verdict.ALLOW

    second.drop({4})
    assert not second.held.known("a") and second.held.get("h") is None


def test_each_partition_decides_from_its_own_state_alone(valid_example: Any) -> None:
    """What a partition decides never depends on which other partitions the enforcer owns:
    an approval read in another partition than its held directive is dead-lettered, an id
    held in one partition is a new directive in another, and restoring one partition leaves
    the other's state under the same id alone."""
    enforcement = core()
    held = enforcement.submitted(directive(valid_example, "x", "ENGAGE"), 1, 0, NOW)
    stray = enforcement.submitted(approval(valid_example, "x", "alice"), 2, 0, NOW)
    assert stray.dead_letter is not None and stray.dead_letter.stage == "enforcer.approval"
    assert stray.writes == []
    other = enforcement.submitted(directive(valid_example, "x"), 2, 1, NOW)
    assert decisions(other)[0].id == "decision:x"  # decided, not a replay of partition 1's
    assert decisions(other)[0].data.verdict is Verdict.ALLOW

    enforcement.drop({2})
    enforcement.restore(changelog(other), STARTS)
    assert enforcement.held.get("x", 1) is not None  # partition 1's hold survives
    assert enforcement.held.known("x", 2) and enforcement.held.get("x", 2) is None
    enforcement.drop({1})
    enforcement.restore(changelog(held), STARTS)
    assert enforcement.held.known("x", 2)  # and partition 2's seen mark survives that


def test_a_switch_decides_later_inputs_with_the_new_version(valid_example: Any) -> None:
    enforcement = core(ScriptedPolicy(1))
    enforcement.submitted(directive(valid_example, "v1"), 0, 0, NOW)
    enforcement.switch(ScriptedPolicy(2))
    step = enforcement.submitted(directive(valid_example, "v2"), 0, 1, NOW)
    assert decisions(step)[0].data.policy_version == 2


def test_without_a_policy_nothing_is_decided(valid_example: Any) -> None:
    enforcement = Enforcement(None, source=SOURCE, actor=ACTOR)
    with pytest.raises(PolicyError, match="no alignment policy"):
        enforcement.submitted(directive(valid_example, "d"), 0, 0, NOW)
    with pytest.raises(PolicyError):
        enforcement.tick(0, NOW)
    assert not enforcement.held.known("d")


def test_seen_marks_last_until_the_directive_expires(valid_example: Any) -> None:
    enforcement = core()
    expires = NOW + timedelta(hours=2)
    step = enforcement.submitted(directive(valid_example, "d-7", expires=expires), 0, 0, NOW)
    [seen] = to(step, Stream.HELD)
    assert seen.value is not None
    assert msgspec.json.decode(seen.value, type=SeenRecord).expires == expires
