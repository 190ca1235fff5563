"""The enforcer's policy: the newest valid version on the policy topic, swapped atomically.

Until a valid version of the configured policy set has arrived the enforcer decides
nothing (fail closed). A new version replaces the current one only when it validates,
is newer, and names the current version as the one it replaces; anything else is logged,
counted and ignored, and the current version stays in force.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge

from c2bus.adapters.policy_store import POLICY_EVENTS
from c2bus.core.policy.compiler import compile_policy
from c2bus.core.policy.evaluator import PolicyEvaluator
from c2bus.errors import InvalidEvent, PolicyError

log = logging.getLogger(__name__)


#: Why a published version can be refused (the label values of ``c2bus_policy_rejected``).
REJECT_REASONS = ("undecodable", "not-newer", "stale-base", "invalid", "mismatch")


class PolicySource:
    def __init__(self, policy_set_id: str, registry: CollectorRegistry) -> None:
        self.policy_set_id = policy_set_id
        self.current: PolicyEvaluator | None = None
        self.rejected = Counter(
            "c2bus_policy_rejected",
            "Published policy versions refused (the previous one stays in force)",
            ["reason"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.version = Gauge(
            "c2bus_policy_version", "Version of the policy in force (0: none)", registry=registry
        )

    @property
    def current_version(self) -> int | None:
        return self.current.policy.version if self.current else None

    def apply(self, raw: bytes | None) -> bool:
        """Consider one record from the policy topic; True when it became the policy."""
        try:
            event = POLICY_EVENTS.decode_event(raw or b"")
        except InvalidEvent as exc:
            return self._reject("undecodable", str(exc))
        data = event.data
        if data.policy_set_id != self.policy_set_id:
            return False  # another policy set shares the topic
        current = self.current_version
        if current is not None and data.version <= current:
            return self._reject("not-newer", f"version {data.version} is not after {current}")
        if data.replaces != current:
            return self._reject(
                "stale-base", f"version {data.version} replaces {data.replaces}, not {current}"
            )
        try:
            compiled = compile_policy(data.document)
        except PolicyError as exc:
            return self._reject("invalid", str(exc))
        if compiled.version != data.version or compiled.policy_set_id != self.policy_set_id:
            return self._reject("mismatch", "the event and its document disagree on id or version")
        self.current = PolicyEvaluator(compiled)  # one assignment: the swap is atomic
        self.version.set(compiled.version)
        log.info(
            "policy.activated",
            extra={
                "policy_set_id": compiled.policy_set_id,
                "version": compiled.version,
                "hash": compiled.content_hash,
                "replaces": data.replaces,
            },
        )
        return True

    def _reject(self, reason: str, detail: str) -> bool:
        self.rejected.labels(reason).inc()
        log.error(
            "policy.rejected",
            extra={"policy_set_id": self.policy_set_id, "reason": reason, "detail": detail[:500]},
        )
        return False
