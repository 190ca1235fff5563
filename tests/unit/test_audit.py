"""The audit chain: every decision names the one before it in its partition, and the
verifier names exactly the records that were changed, inserted, moved or lost; signed
checkpoints show records removed from a partition's end.

Signatures are a stand-in here (a keyed digest only the "enforcer" of this test can make);
the real Ed25519 signatures are checked against Kafka in tests/integration/test_audit.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from c2bus.core.audit import (
    GENESIS,
    START,
    ChainUnknown,
    Finding,
    Head,
    Verifier,
    checkpoint_event,
    digest,
    head_of,
    newest_checkpoints,
)
from c2bus.core.codec import decode_event, encode_event
from c2bus.core.enforcement import Enforcement, Step, Stream
from c2bus.core.events import ChainLink, DecisionEvent
from tests.unit.test_enforcement import (
    ACTOR,
    NOW,
    SOURCE,
    STARTS,
    ScriptedPolicy,
    core,
    decisions,
    directive,
)

KEY = b"the enforcer's key"


def sign(value: bytes) -> list[tuple[str, bytes]]:
    return [("sig", hashlib.sha256(KEY + value).digest())]


def check(value: bytes | None, headers: Any) -> str | None:
    if value is not None and headers == sign(value):
        return None
    return "badly signed"


@dataclass
class Record:
    partition: int
    offset: int
    value: bytes | None
    headers: Any


class Log:
    """A decisions topic: what the lanes write, at consecutive offsets per partition."""

    def __init__(self) -> None:
        self.partitions: dict[int, list[Record]] = {}
        #: the checkpoints topic (one partition)
        self.checkpoints: list[Record] = []

    def append(self, partition: int, value: bytes | None, headers: Any = None) -> Record:
        records = self.partitions.setdefault(partition, [])
        record = Record(partition, len(records), value, headers)
        records.append(record)
        return record

    def write(self, step: Step) -> None:
        for w in step.writes:
            if w.stream is Stream.DECISIONS:
                assert w.partition is not None and w.value is not None
                self.append(w.partition, w.value, sign(w.value))
            elif w.stream is Stream.CHECKPOINTS:
                assert w.value is not None
                self.checkpoint(w.value, sign(w.value))

    def checkpoint(self, value: bytes | None, headers: Any) -> Record:
        record = Record(0, len(self.checkpoints), value, headers)
        self.checkpoints.append(record)
        return record

    def verify(self, from_start: bool = True) -> list[Finding]:
        checkpoints, findings = newest_checkpoints(self.checkpoints, check, "checkpoints")
        verifier = Verifier(check, from_start, checkpoints)
        for partition, records in sorted(self.partitions.items()):
            for r in records:
                verifier.feed(partition, r.offset, r.value, r.headers)
        verifier.finish({p: len(records) for p, records in self.partitions.items()})
        return findings + verifier.findings


def decided(example: Any, enforcement: Enforcement, log: Log, n: int, partition: int = 0) -> None:
    """``n`` directives decided in ``partition`` (every third denied), logged."""
    for _ in range(n):
        offset = len(log.partitions.get(partition, []))
        kind = "STRIKE" if offset % 3 == 2 else "MOVE"
        value = directive(example, f"d-{partition}-{offset}", kind)
        log.write(enforcement.submitted(value, partition, offset, NOW))


def link_of(record: Record) -> ChainLink:
    event = decode_event(record.value or b"")
    assert isinstance(event, DecisionEvent) and event.data.chain is not None
    return event.data.chain


def test_each_decision_links_to_the_one_before_it_in_its_input_partition(
    valid_example: Any,
) -> None:
    enforcement, log = core(), Log()
    decided(valid_example, enforcement, log, 4, partition=2)
    decided(valid_example, enforcement, log, 3, partition=5)
    # a replay and an expiry denial are links of the chain too
    log.write(enforcement.submitted(directive(valid_example, "r", "ENGAGE"), 5, 10, NOW))
    log.write(enforcement.submitted(directive(valid_example, "r", "ENGAGE"), 5, 11, NOW))
    log.write(enforcement.tick(5, NOW + timedelta(hours=2)))
    assert sorted(log.partitions) == [2, 5]  # decisions land in their input partition
    for partition, records in log.partitions.items():
        links = [link_of(r) for r in records]
        assert [link.seq for link in links] == list(range(len(records)))
        assert {link.partition for link in links} == {partition}
        assert links[0].prev == GENESIS
        for before, link in zip(records, links[1:], strict=False):
            assert link.prev == digest(before.value or b"")
    assert len(log.partitions[5]) == 6  # three, the held one, its replay, its expiry
    assert log.verify() == []


def test_a_lane_set_up_again_continues_the_chain_from_the_newest_signed_record(
    valid_example: Any,
) -> None:
    first, log = core(), Log()
    decided(valid_example, first, log, 3)
    forged = log.append(0, log.partitions[0][1].value, [("sig", b"forged")])
    second = Enforcement(ScriptedPolicy(), source=SOURCE, actor=ACTOR)
    head = head_of(log.partitions[0], check)
    assert head == Head(2, digest(log.partitions[0][2].value or b""))  # the forgery passed over
    second.restore([], {0: head})
    decided(valid_example, second, log, 2)
    assert link_of(log.partitions[0][-2]).seq == 3
    assert log.verify() == [Finding(0, forged.offset, "signature: badly signed")]


def test_a_partition_whose_chain_head_was_not_read_decides_nothing(valid_example: Any) -> None:
    enforcement = Enforcement(ScriptedPolicy(), source=SOURCE, actor=ACTOR)
    enforcement.restore([], {1: START})
    with pytest.raises(ChainUnknown, match="partition 0"):
        enforcement.submitted(directive(valid_example, "d"), 0, 0, NOW)
    enforcement.submitted(directive(valid_example, "d"), 1, 0, NOW)
    enforcement.drop({1})
    with pytest.raises(ChainUnknown, match="partition 1"):
        enforcement.submitted(directive(valid_example, "e"), 1, 1, NOW)


def rewritten(record: Record, **changes: Any) -> bytes:
    event = decode_event(record.value or b"")
    assert isinstance(event, DecisionEvent)
    data = msgspec.structs.replace(event.data, **changes)
    return encode_event(msgspec.structs.replace(event, data=data))


def test_an_untouched_log_verifies_and_each_kind_of_tampering_is_named_alone(
    valid_example: Any,
) -> None:
    enforcement, log = core(), Log()
    decided(valid_example, enforcement, log, 3, partition=0)
    decided(valid_example, enforcement, log, 3, partition=1)
    assert log.verify() == []
    genuine = log.partitions[0][1]
    flipped = log.append(0, rewritten(genuine, verdict="DENY"), genuine.headers)
    replayed = log.append(0, genuine.value, genuine.headers)
    moved = log.append(0, log.partitions[1][2].value, log.partitions[1][2].headers)
    unsigned = log.append(0, genuine.value, None)
    tombstone = log.append(0, None)
    garbage = log.append(0, b'{"not": "a decision"}', sign(b'{"not": "a decision"}'))
    decided(
        valid_example, enforcement, log, 2, partition=0
    )  # the enforcer writes on: its records are fine
    findings = log.verify()
    assert [f.offset for f in findings] == [
        flipped.offset,
        replayed.offset,
        moved.offset,
        unsigned.offset,
        tombstone.offset,
        garbage.offset,
    ]
    problems = [f.problem for f in findings]
    assert problems[0] == "signature: badly signed"
    assert problems[1].startswith("chain broken: names sha256:")
    assert problems[2] == "its link names partition 1: a record moved from there"
    assert problems[3] == "signature: badly signed"
    assert problems[4] == "a record with no value"
    assert problems[5].startswith("not a decision:")
    assert str(findings[0]) == f"partition 0 offset {flipped.offset}: signature: badly signed"


def test_a_sequence_gap_and_an_unchained_record_after_chained_ones_are_named(
    valid_example: Any,
) -> None:
    enforcement, log = core(), Log()
    decided(valid_example, enforcement, log, 2)
    # the key holder itself writes a link that skips a number, then one with no link
    last = log.partitions[0][-1]
    skipped = rewritten(last, chain=ChainLink(partition=0, seq=5, prev=digest(last.value or b"")))
    gap = log.append(0, skipped, sign(skipped))
    bare = rewritten(last, chain=None)
    unchained = log.append(0, bare, sign(bare))
    assert [(f.offset, f.problem) for f in log.verify()] == [
        (gap.offset, "sequence: 5 where 2 comes next"),
        (unchained.offset, "no chain link, after chained records"),
    ]


def test_a_log_read_from_its_start_must_begin_at_the_genesis(valid_example: Any) -> None:
    enforcement, log = core(), Log()
    decided(valid_example, enforcement, log, 3)
    del log.partitions[0][0]  # the first record lost
    (finding,) = log.verify()
    assert finding.offset == 1 and finding.problem.startswith("the chain does not begin here")
    assert finding.problem.endswith("records before it lost")
    # read from part-way (--since), the first signed record anchors the chain
    assert log.verify(from_start=False) == []


def test_records_from_before_chaining_may_only_come_first(valid_example: Any) -> None:
    log = Log()
    enforcement = core()
    decided(valid_example, enforcement, log, 2)
    legacy = [rewritten(r, chain=None) for r in log.partitions[0]]
    log.partitions.clear()
    for value in legacy:
        log.append(0, value, sign(value))
    head = head_of(log.partitions[0], check)
    assert head == Head(-1, digest(legacy[-1]))
    later = Enforcement(ScriptedPolicy(), source=SOURCE, actor=ACTOR)
    later.restore([], {0: head})
    decided(valid_example, later, log, 2)
    assert link_of(log.partitions[0][2]) == ChainLink(partition=0, seq=0, prev=digest(legacy[-1]))
    verifier = Verifier(check)
    for r in log.partitions[0]:
        verifier.feed(0, r.offset, r.value, r.headers)
    assert verifier.findings == []
    assert verifier.records == 4 and verifier.partitions == {0: 4}
    assert verifier.heads()[0] == Head(1, digest(log.partitions[0][-1].value or b""))


def test_a_tail_with_nothing_signed_shows_no_head(valid_example: Any) -> None:
    log = Log()
    log.append(0, b"x", None)
    log.append(0, None, None)
    log.append(0, b"{}", sign(b"{}"))
    assert head_of(log.partitions[0], check) is None
    assert head_of([], check) is None
    assert STARTS[0] == START == Head(-1, GENESIS)
    assert decisions(Step()) == []


def test_a_lane_checkpoints_its_chain_at_intervals_while_it_moves_on(valid_example: Any) -> None:
    enforcement, log = core(), Log()  # core(): every partition restored at its start
    decided(valid_example, enforcement, log, 2, partition=3)
    log.write(enforcement.tick(3, NOW))  # due at once: the chain moved since the restore
    log.write(enforcement.tick(4, NOW))  # partition 4 never moved: nothing to vouch for
    (first,) = [decode_event(r.value or b"") for r in log.checkpoints]
    assert first.data.partition == 3 and first.data.seq == 1  # the head: its second record
    assert first.data.head == digest(log.partitions[3][-1].value or b"")
    assert first.classification.value == "NATO UNCLASSIFIED" and first.subject == "decisions/3"
    decided(valid_example, enforcement, log, 1, partition=3)
    log.write(enforcement.tick(3, NOW + timedelta(seconds=29)))  # within the interval
    assert len(log.checkpoints) == 1
    log.write(enforcement.tick(3, NOW + timedelta(seconds=30)))
    assert decode_event(log.checkpoints[-1].value or b"").data.seq == 2
    log.write(enforcement.tick(3, NOW + timedelta(minutes=5)))  # due, but nothing moved
    assert len(log.checkpoints) == 2
    # a lane set up again vouches only for what it appends, never for the tail it found
    again = Enforcement(ScriptedPolicy(), source=SOURCE, actor=ACTOR)
    again.restore([], {3: head_of(log.partitions[3], check) or START})
    assert not again.tick(3, NOW + timedelta(minutes=6))
    decided(valid_example, again, log, 1, partition=3)
    log.write(again.tick(3, NOW + timedelta(minutes=6)))  # its first: due at once
    assert decode_event(log.checkpoints[-1].value or b"").data.seq == 3
    assert log.verify() == []


def test_records_removed_from_a_partitions_end_are_named_by_its_checkpoint(
    valid_example: Any,
) -> None:
    enforcement, log = core(), Log()
    decided(valid_example, enforcement, log, 4, partition=1)
    log.write(enforcement.tick(1, NOW))  # vouches for seq 3
    decided(valid_example, enforcement, log, 2, partition=2)
    log.write(enforcement.tick(2, NOW))
    del log.partitions[1][2:]  # the last two decisions of partition 1 removed
    (finding,) = log.verify()
    assert (finding.partition, finding.offset, finding.topic) == (1, 2, None)
    assert finding.problem == (
        f"records removed from the end: the checkpoint at offset 0 ({NOW:%Y-%m-%d %H:%M:%SZ}) "
        "vouches for seq 3, the partition ends at seq 1"
    )
    del log.partitions[1][:]  # all of it: named from the beginning, not judged part-way
    assert [f.problem.endswith("ends at no chained record") for f in log.verify()] == [True]
    assert log.verify(from_start=False) == []


def test_a_partition_cut_back_and_written_again_is_named_where_it_differs(
    valid_example: Any,
) -> None:
    """The holder of the enforcer's key (or a lane set up on a cut-down log) writes the
    removed sequence numbers again: every link holds, but the checkpoint's record differs."""
    enforcement, log = core(), Log()
    decided(valid_example, enforcement, log, 4)
    log.write(enforcement.tick(0, NOW))  # vouches for seq 3
    del log.partitions[0][2:]
    later = Enforcement(ScriptedPolicy(), source=SOURCE, actor=ACTOR)
    later.restore([], {0: head_of(log.partitions[0], check) or START})
    for offset in (2, 3, 4):  # other directives at the removed places
        log.write(later.submitted(directive(valid_example, f"x{offset}", "STRIKE"), 0, offset, NOW))
    (finding,) = log.verify()
    assert (finding.partition, finding.offset) == (0, 3)
    assert finding.problem.startswith("seq 3 is not the record the checkpoint at offset 0")


def test_only_signed_checkpoints_count_and_the_furthest_of_a_partition_is_used(
    valid_example: Any,
) -> None:
    enforcement, log = core(), Log()
    decided(valid_example, enforcement, log, 3)
    real = checkpoint_event(0, Head(2, digest(log.partitions[0][-1].value or b"")), NOW, SOURCE)
    older = checkpoint_event(0, Head(1, digest(log.partitions[0][1].value or b"")), NOW, SOURCE)
    log.checkpoint(encode_event(real), sign(encode_event(real)))
    log.checkpoint(encode_event(older), sign(encode_event(older)))  # read later, vouches less
    far = checkpoint_event(0, Head(9, GENESIS), NOW, SOURCE)  # a forgery: vouches for more
    forged = log.checkpoint(encode_event(far), [("sig", b"forged")])
    garbage = log.checkpoint(b"{}", sign(b"{}"))
    newest, bad = newest_checkpoints(log.checkpoints, check, "c2.audit.checkpoints")
    assert newest[0].seq == 2 and newest[0].offset == 0
    assert [(f.offset, f.topic) for f in bad] == [
        (forged.offset, "c2.audit.checkpoints"),
        (garbage.offset, "c2.audit.checkpoints"),
    ]
    assert str(bad[0]) == (
        f"c2.audit.checkpoints partition 0 offset {forged.offset}: signature: badly signed"
    )
    assert bad[1].problem.startswith("not a checkpoint:")
    verified = log.verify()
    assert [f.topic for f in verified] == ["checkpoints", "checkpoints"]  # the chain holds
