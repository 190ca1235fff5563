"""What a console asks for: subscribe (live, snapshot or resume), unsubscribe, ping, submit
a directive, approve a held one, acknowledge one. Each request is answered with its
correlation id, or refused with an ``error`` frame (:class:`~c2bus.errors.Refused`);
directives, approvals and acknowledgements are rate limited per session."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from c2bus.adapters.settings import GatewaySettings
from c2bus.adapters.signing import APPROVALS, STATUS
from c2bus.adapters.topics import TopicNames
from c2bus.core.cloudevents import new_event
from c2bus.core.directives import APPROVER_ROLES, approval_event
from c2bus.core.events import DirectiveData, DirectiveEvent, DirectiveState, issuer_scoped
from c2bus.core.labels import SecurityLabel, parse_releasability
from c2bus.core.lifecycle import refusal
from c2bus.core.protocol import (
    COMMANDER_ROLE,
    Ack,
    Approve,
    BadMessage,
    ClientMessage,
    CloseCode,
    Ping,
    Submit,
    Subscribe,
    Unsubscribe,
    error,
    frame,
    parse_client_message,
)
from c2bus.errors import KafkaError, Refused
from c2bus.services.gateway.history import History
from c2bus.services.gateway.metrics import GatewayMetrics
from c2bus.services.gateway.reports import Reports, status_step
from c2bus.services.gateway.routing import (
    Hub,
    Session,
    TopicPartition,
    cut_short,
    replay_from,
    scope_for,
    unsubscribe,
)
from c2bus.services.gateway.state import DirectiveDirectory, LatestSa

log = logging.getLogger(__name__)
#: Starts a session's resume replay in the session's own task group, ending the one before
#: it (None: just end it).
Spawn = Callable[[Coroutine[Any, Any, None] | None], None]


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 if a request may go now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Requests:
    """A gateway's answers to its consoles' requests (one instance serves every session)."""

    def __init__(
        self,
        *,
        config: GatewaySettings,
        topics: TopicNames,
        hub: Hub,
        latest: LatestSa,
        directory: DirectiveDirectory,
        stream_topics: dict[Any, str],
        history: History,
        reports: Reports,
        metrics: GatewayMetrics,
        source: str,
    ) -> None:
        self.config = config
        self.topics = topics
        self.hub = hub
        self.latest = latest
        self.directory = directory
        self.stream_topics = stream_topics
        self.history = history
        self.reports = reports
        self.metrics = metrics
        self.source = source

    def limiter(self) -> TokenBucket:
        rate = self.config.submit_rate
        return TokenBucket(rate, 2 * rate)

    async def handle(
        self, session: Session, raw: str | bytes, limiter: TokenBucket, spawn: Spawn
    ) -> None:
        """Answer one frame from the console; a refusal becomes its ``error`` frame."""
        correlation = ""
        try:
            try:
                message: ClientMessage = parse_client_message(raw)
            except BadMessage as exc:
                correlation = exc.correlation_id
                raise Refused(exc.code, str(exc)) from exc
            correlation = message.id
            if isinstance(message, Subscribe):
                await self.subscribe(session, message, spawn)
            elif isinstance(message, Unsubscribe):
                unsubscribe(session, message)
            elif isinstance(message, Ping):
                session.outbox.reply(frame("pong", id=message.id))
            else:
                wait = limiter.take()
                if wait:
                    raise Refused(
                        "rate_limited",
                        f"at most {self.config.submit_rate:g} directives, approvals and "
                        "acknowledgements per second",
                        retry_after_ms=int(wait * 1000) + 1,
                    )
                if isinstance(message, Submit):
                    await self.submit(session, message)
                elif isinstance(message, Approve):
                    await self.approve(session, message)
                else:
                    await self.ack(session, message)
        except Refused as exc:
            self.metrics.forbidden.labels(exc.code).inc()
            session.outbox.reply(error(correlation, exc.code, str(exc), **exc.fields))

    # --- subscriptions ------------------------------------------------------------------

    async def subscribe(self, session: Session, message: Subscribe, spawn: Spawn) -> None:
        hub = self.hub
        scope = scope_for(session.identity, message, hub.tree)
        partitions = hub.partitions({self.stream_topics[s] for s in scope.streams})
        replay = replay_from(message.positions or {}, partitions)
        lost: list[TopicPartition] = []
        if replay:
            try:
                starts = await self.history.log_starts(list(replay))
            except KafkaError as exc:
                raise Refused("unavailable", f"Kafka cannot be read: {exc.cause}") from exc
            lost = cut_short(replay, starts)
        # From here to the end no await: the scope, the snapshot and the partitions to replay
        # are all fixed at one instant of live routing (and a replay still running for an
        # earlier subscription ends before it can queue anything more).
        partitions = hub.partitions({self.stream_topics[s] for s in scope.streams})
        subscription = hub.subscribe(
            session,
            message,
            scope,
            replay,
            lost,
            partitions=partitions,
            sa_topic=self.topics.sa,
            latest=self.latest,
            now=datetime.now(UTC),
        )
        self.metrics.resumes.labels(subscription.mode).inc()
        replay = subscription.replay
        spawn(self._catch_up(session, message.id, replay) if replay else None)

    async def _catch_up(
        self, session: Session, correlation: str, starts: dict[TopicPartition, int]
    ) -> None:
        try:
            await self.history.replay(session, starts)
        except KafkaError as exc:
            log.error("console.replay_failed", extra={"session": session.id, "error": str(exc)})
            self.metrics.slow.labels("replay_failed").inc()
            session.outbox.close_with(
                CloseCode.SLOW_CONSUMER, "slow consumer: the resume could not read Kafka: resume"
            )
            return
        session.outbox.put(frame("live", id=correlation))  # after the replayed events

    # --- directives and acknowledgements ------------------------------------------------

    async def submit(self, session: Session, message: Submit) -> None:
        identity = session.identity
        if not identity.has_role(COMMANDER_ROLE):
            raise Refused("forbidden", f"submitting directives needs the role {COMMANDER_ROLE}")
        label = SecurityLabel(message.classification, parse_releasability(message.releasableto))
        if not identity.may_see(label):
            raise Refused(
                "forbidden", "a directive cannot be labelled above what its issuer may see"
            )
        body = message.directive
        try:  # the id is the issuer's alone: no unit can take another's
            directive_id = issuer_scoped(identity.unit, message.directive_id or str(uuid.uuid4()))
        except ValueError as exc:
            raise Refused("bad_request", str(exc)) from exc
        event = new_event(
            DirectiveEvent,
            id=directive_id,
            source=self.source,
            time=datetime.now(UTC),
            classification=message.classification,
            releasableto=message.releasableto,
            subject=identity.subject,
            data=DirectiveData(
                kind=body.kind,
                issuer=identity.unit,  # from the token, never the payload
                target=body.target,
                expires=body.expires,
                valid_from=body.valid_from,
                area=body.area,
                text=body.text,
                parameters=body.parameters,
            ),
        )
        position = await self.reports.produce(self.topics.submitted, event)
        self.metrics.submitted.inc()
        log.info(
            "directive.submitted",
            extra={"directive_id": event.id, "sub": identity.subject, "target": body.target},
        )
        session.outbox.reply(frame("submitted", id=message.id, directive_id=event.id, pos=position))

    async def approve(self, session: Session, message: Approve) -> None:
        """Write the approval of the console's user, attested by this gateway's signature:
        it authenticated the approver. Any approval the user may label is written, whether
        or not the directive exists or they may see it (the enforcer counts only approvals
        that the policy lets count), so the answer reveals nothing of other directives."""
        identity = session.identity
        if not any(identity.has_role(role) for role in APPROVER_ROLES):
            roles = " or ".join(APPROVER_ROLES)
            raise Refused("forbidden", f"approving directives needs the role {roles}")
        label = SecurityLabel(message.classification, parse_releasability(message.releasableto))
        if not identity.may_see(label):
            raise Refused(
                "forbidden", "an approval cannot be labelled above what its approver may see"
            )
        event = approval_event(
            identity,
            message.directive_id,
            message.target,
            classification=message.classification,
            releasableto=message.releasableto,
            comment=message.comment,
            source=self.source,
            now=datetime.now(UTC),
        )
        position = await self.reports.produce(self.topics.submitted, event, APPROVALS)
        self.metrics.approvals.inc()
        log.info(
            "approval.accepted",
            extra={"directive_id": message.directive_id, "approver": identity.subject},
        )
        session.outbox.reply(
            frame("approval", id=message.id, directive_id=message.directive_id, pos=position)
        )

    async def ack(self, session: Session, message: Ack) -> None:
        identity = session.identity
        directive = self.directory.get(message.directive_id)
        # Only its target acknowledges a directive; anyone else is told no more than of one
        # that does not exist (not that it exists, nor whose it is).
        if (
            directive is None
            or not identity.may_see(directive.label)
            or directive.data.target != identity.unit
        ):
            raise Refused("unknown_directive", f"no approved directive {message.directive_id}")
        state = DirectiveState(message.state)
        now = datetime.now(UTC)
        why = refusal(self.directory.state(directive.id), state, directive.data.expires, now)
        if why is not None:
            raise Refused("illegal_transition", f"{state.value} refused for {directive.id}: {why}")
        status = status_step(directive, state, identity, message.reason, self.source)
        position = await self.reports.produce(self.topics.status, status, STATUS)
        self.directory.wrote(directive.id, state, position)
        self.metrics.lifecycle.labels(state.value).inc()
        delivered_at = self.directory.delivered_at(directive.id)
        if state is not DirectiveState.HAVE_DO and delivered_at is not None:
            self.metrics.hops.labels("acknowledged").observe(max(0.0, time.time() - delivered_at))
        log.info(
            "directive.acknowledged",
            extra={"directive_id": directive.id, "state": state.value, "sub": identity.subject},
        )
        session.outbox.reply(
            frame(
                "acked", id=message.id, directive_id=directive.id, state=state.value, pos=position
            )
        )
