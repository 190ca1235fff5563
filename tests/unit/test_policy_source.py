"""The enforcer's policy source takes only valid, newer versions built on the current one."""

from __future__ import annotations

import msgspec
from prometheus_client import CollectorRegistry

from c2bus.adapters.policy_source import PolicySource
from c2bus.adapters.policy_store import policy_event
from c2bus.core.codec import encode_event
from tests.unit.test_policy import POLICY


def source() -> PolicySource:
    return PolicySource("alliance-main", CollectorRegistry())


def version(n: int, replaces: int | None) -> bytes:
    doc = msgspec.structs.replace(POLICY.document, version=n)
    return encode_event(policy_event(doc, replaces, "urn:test"))


def rejected(s: PolicySource, reason: str) -> float:
    return float(s.rejected.labels(reason)._value.get())


def test_versions_apply_in_order_on_their_base() -> None:
    s = source()
    assert s.current is None
    assert s.apply(version(1, None))
    assert s.current_version == 1
    assert s.apply(version(2, 1))
    assert s.current_version == 2
    assert s.version._value.get() == 2


def test_refusals_keep_the_current_version_and_are_counted() -> None:
    s = source()
    s.apply(version(1, None))
    assert not s.apply(version(1, None))
    assert rejected(s, "not-newer") == 1
    assert not s.apply(version(3, 2))  # built on a version this enforcer never had
    assert rejected(s, "stale-base") == 1
    assert not s.apply(b"garbage")
    assert rejected(s, "undecodable") == 1
    assert not s.apply(None)  # a tombstone
    assert s.current_version == 1


def test_other_policy_sets_are_not_ours() -> None:
    s = PolicySource("another-set", CollectorRegistry())
    assert not s.apply(version(1, None))
    assert s.current is None
    assert rejected(s, "not-newer") == 0
