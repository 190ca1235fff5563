"""The enforcer's metrics: what a lane's transaction decided and wrote is counted once it
commits (:class:`Tally`), never when it is only attempted."""

from __future__ import annotations

import time
from collections import Counter as Counts
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from c2bus.adapters.metrics import ConsumerLag, EventFlow, directive_hops, seconds_since
from c2bus.core.decision import Approval, Decision, DirectivePolicy
from c2bus.core.enforcement import Step, Stream
from c2bus.core.events import DirectiveEvent, Verdict


@dataclass
class Tally:
    """What the open transaction decided and wrote: reported in the metrics once it
    commits, forgotten if it aborts."""

    verdicts: Counts[str] = field(default_factory=Counts)
    #: by (verdict, rule cited)
    rules: Counts[tuple[str, str]] = field(default_factory=Counts)
    #: events written, by (topic, CloudEvents type)
    produced: Counts[tuple[str, str]] = field(default_factory=Counts)
    #: submission times of the directives decided
    submitted: list[datetime] = field(default_factory=list)

    def add(self, step: Step, topic_of: Callable[[Stream], str]) -> None:
        for decided in step.decided:
            verdict = decided.decision.verdict.value
            self.verdicts[verdict] += 1
            for rule in {reason.rule for reason in decided.decision.reasons}:
                self.rules[(verdict, rule)] += 1
            if decided.final:
                self.submitted.append(decided.directive.time)
        for write in step.writes:
            if write.kind is not None:
                self.produced[(topic_of(write.stream), write.kind)] += 1

    def clear(self) -> None:
        self.verdicts.clear()
        self.rules.clear()
        self.produced.clear()
        self.submitted.clear()


class EnforcerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter(
            "c2bus_enforcer_decisions",
            "Directives decided (counted when their transaction commits)",
            ["verdict"],
            registry=registry,
        )
        self.decision_rules = Counter(
            "c2bus_enforcer_decision_rules",
            "Rules cited by committed decisions, by verdict and rule (a decision cites one "
            "or more)",
            ["verdict", "rule"],
            registry=registry,
        )
        for verdict in Verdict:
            self.decisions.labels(verdict.value)
        self.evaluation_seconds = Histogram(
            "c2bus_enforcer_evaluation_seconds",
            "Time the policy took to decide one directive",
            buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1),
            registry=registry,
        )
        self.hops = directive_hops(registry, ("decided",))
        self.flow = EventFlow(registry)
        self.lag = ConsumerLag(registry)
        self.transactions = Counter(
            "c2bus_enforcer_transactions",
            "Enforcer transactions (one per partition and commit window) by outcome",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("committed", "aborted"):
            self.transactions.labels(outcome)
        self.lane_failures = Counter(
            "c2bus_enforcer_lane_failures",
            "Partition lanes failed and set up again, by step and error",
            ["stage", "error"],
            registry=registry,
        )
        self.restarts = Counter(
            "c2bus_enforcer_pipeline_restarts",
            "Pipeline restarts by the watchdog, by reason",
            ["reason"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "c2bus_enforcer_commit_seconds",
            "Time to commit one window (all its partitions' transactions, or flush + commit)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
            registry=registry,
        )
        self.partitions = Gauge(
            "c2bus_enforcer_partitions", "Input partitions owned and ready", registry=registry
        )
        self.held = Gauge("c2bus_enforcer_held", "Directives held for approvals", registry=registry)

    def committed(self, tally: Tally, now: datetime) -> None:
        """Count what a committed transaction decided and wrote."""
        for verdict, count in tally.verdicts.items():
            self.decisions.labels(verdict).inc(count)
        for (verdict, rule), count in tally.rules.items():
            self.decision_rules.labels(verdict, rule).inc(count)
        for (destination, kind), count in tally.produced.items():
            self.flow.sent(destination, kind, count)
        for submitted in tally.submitted:
            self.hops.labels("decided").observe(seconds_since(submitted, now))
        self.transactions.labels("committed").inc()


class TimedPolicy(DirectivePolicy):
    """A policy version whose every decision is timed into the evaluation histogram."""

    def __init__(self, policy: DirectivePolicy, histogram: Histogram) -> None:
        self.policy = policy
        self.histogram = histogram

    def decide(
        self,
        directive: DirectiveEvent,
        now: datetime,
        approvals: frozenset[Approval] = frozenset(),
        replay: bool = False,
    ) -> Decision:
        started = time.perf_counter()
        decision = self.policy.decide(directive, now, approvals, replay)
        self.histogram.observe(time.perf_counter() - started)
        return decision
