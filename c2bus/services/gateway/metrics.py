"""The gateway's metrics, every series exported from the start."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from c2bus.adapters.metrics import HOP_BUCKETS, ConsumerLag, EventFlow, directive_hops
from c2bus.core.protocol import ERROR_CODES, Stream


class GatewayMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        queued_bytes: Callable[[], float],
        snapshot_entities: Callable[[], float],
    ) -> None:
        r = self.registry = registry
        self.connections = Gauge("c2bus_gateway_connections", "Open console sessions", registry=r)
        self.refused = Counter(
            "c2bus_gateway_refused", "Handshakes refused", ["reason"], registry=r
        )
        for reason in ("missing", "invalid", "ambiguous"):
            self.refused.labels(reason)
        self.sent = Counter(
            "c2bus_gateway_events_sent",
            "Event frames queued for consoles, by stream and CloudEvents type",
            ["stream", "type"],
            registry=r,
        )
        self.event_age = Histogram(
            "c2bus_gateway_event_age_seconds",
            "Event time to the moment the gateway queued the event for its consoles",
            ["stream"],
            buckets=HOP_BUCKETS,
            registry=r,
        )
        for stream in Stream:
            self.event_age.labels(stream.value)
        self.hops = directive_hops(r, ("delivered", "acknowledged"))
        self.flow = EventFlow(r)
        self.lag = ConsumerLag(r)
        self.slow = Counter(
            "c2bus_gateway_slow_disconnects",
            "Consoles closed as slow (4008), by why: outbox_full, no_pong, replay_failed",
            ["reason"],
            registry=r,
        )
        for reason in ("outbox_full", "no_pong", "replay_failed"):
            self.slow.labels(reason)
        self.conflated = Counter(
            "c2bus_gateway_conflated",
            "SA frames replaced by a newer state of the same entity before being sent",
            registry=r,
        )
        self.queued = Gauge(
            "c2bus_gateway_queued_bytes", "Event frame bytes waiting for consoles", registry=r
        )
        self.queued.set_function(queued_bytes)
        self.resumes = Counter(
            "c2bus_gateway_resumes", "Subscriptions by how they started", ["mode"], registry=r
        )
        self.forbidden = Counter(
            "c2bus_gateway_requests_refused",
            "Console requests refused, by error code",
            ["code"],
            registry=r,
        )
        for code in ERROR_CODES:
            self.forbidden.labels(code)
        self.submitted = Counter(
            "c2bus_gateway_directives_submitted", "Directives submitted by consoles", registry=r
        )
        self.approvals = Counter(
            "c2bus_gateway_approvals",
            "Approvals of held directives written for consoles' approvers",
            registry=r,
        )
        self.lifecycle = Counter(
            "c2bus_gateway_lifecycle_steps",
            "DELIVERED, WILCO, CANTCO, HAVE_DO and EXPIRED steps produced",
            ["state"],
            registry=r,
        )
        self.lifecycle_ignored = Counter(
            "c2bus_gateway_lifecycle_ignored",
            "Lifecycle steps read that changed nothing: not legal after the state the "
            "directive was in (a later, conflicting answer; an EXPIRED written twice)",
            ["state"],
            registry=r,
        )
        self.expired = Counter(
            "c2bus_gateway_expired_sessions",
            "Sessions closed because their token expired",
            registry=r,
        )
        self.revoked = Counter(
            "c2bus_gateway_revoked_sessions",
            "Sessions closed because their token or subject was revoked",
            registry=r,
        )
        self.replay_skipped = Counter(
            "c2bus_gateway_replay_invalid",
            "Invalid records skipped while replaying for a resume",
            registry=r,
        )
        self.snapshot_entities = Gauge(
            "c2bus_gateway_snapshot_entities", "Entities in the latest-SA table", registry=r
        )
        self.snapshot_entities.set_function(snapshot_entities)
