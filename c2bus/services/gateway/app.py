"""The gateway process: Kafka in, WebSocket consoles out, and consoles' directives back in.

One group-less consumer reads every partition of the SA, approved-directive, decision,
directive-status and policy topics (``read_committed``): each gateway serves its own
consoles, so many can run side by side. At start-up it reads the SA and approved topics
back over the snapshot horizon (the latest-SA table, the directive directory) and the
policy topic from its start (the command structure that scopes units), and only then
accepts consoles. Each event is decoded once, its frame encoded once, and offered to
every entitled session. Consoles authenticate at the handshake with a bearer token
(header, or ``access_token`` query parameter for browsers) and speak ``c2bus.v1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError as AioKafkaError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from c2bus.adapters.auth import TokenVerifier, Verified, bearer_token, verifier_for
from c2bus.adapters.dlq import DeadLetters
from c2bus.adapters.kafka import assign_all, new_consumer, new_producer, start_clients
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.metrics import HOP_BUCKETS, ConsumerLag, EventFlow, directive_hops
from c2bus.adapters.policy_source import PolicySource
from c2bus.adapters.settings import ServiceSettings
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import EventDecoder, encode_event
from c2bus.core.directives import lifecycle_step
from c2bus.core.events import (
    DecisionEvent,
    DirectiveData,
    DirectiveEvent,
    DirectiveState,
    DirectiveStatusEvent,
    Envelope,
    SaEvent,
    event_type,
)
from c2bus.core.identity import Identity
from c2bus.core.labels import SecurityLabel, parse_releasability
from c2bus.core.protocol import (
    ERROR_CODES,
    SUBPROTOCOL,
    Ack,
    BadMessage,
    CloseCode,
    Ping,
    Submit,
    Subscribe,
    Unsubscribe,
    error,
    event_frame,
    frame,
    parse_client_message,
    parse_position_key,
    position_key,
    welcome,
)
from c2bus.core.protocol import Stream as S
from c2bus.errors import AuthError, InvalidEvent
from c2bus.services.gateway.history import History
from c2bus.services.gateway.hub import Hub, Outbox, Session
from c2bus.services.gateway.scope import STREAM_TYPES, Routed, Scope, UnitTree, entitled
from c2bus.services.gateway.state import DirectiveDirectory, Latest, LatestSa, sa_key

log = logging.getLogger(__name__)
HEARTBEAT_S = 20.0
# Frames written to a console's socket in one call, at most.
WRITE_BATCH = 256
# The kernel's send buffer per console socket, fixed (instead of autotuned up to megabytes)
# so that what a console can have in flight is bounded and a stalled one is found early.
SOCKET_SEND_BUFFER = 128 * 1024
#: The role a console needs to submit directives (acknowledging needs only to be the target).
COMMANDER_ROLE = "commander"
TP = tuple[str, int]


class Refused(Exception):
    """A console request refused: ``code`` and message go back with its correlation id."""

    def __init__(self, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields


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


class Gateway:
    def __init__(self, settings: ServiceSettings, verifier: TokenVerifier) -> None:
        self.settings = settings
        self.config = settings.gateway
        self.verifier = verifier
        self.topics = TopicNames(settings.kafka.topic_prefix)
        self.hub = Hub()
        self.ready = False
        self.port = settings.port
        self.source = f"urn:c2bus:gateway:{settings.instance}"
        self.latest = LatestSa(timedelta(seconds=self.config.sa_horizon_s))
        self.directory = DirectiveDirectory()
        #: Per partition, the next offset live routing will handle.
        self.live_next: dict[TP, int] = {}
        self.producer: AIOKafkaProducer | None = None
        self.history: History | None = None
        self._replays: dict[str, asyncio.Task[None]] = {}
        self.registry = CollectorRegistry()
        self.policy = PolicySource(settings.policy_set_id, self.registry)
        self._metrics()
        self._revocations_changed = asyncio.Condition()
        self.decoders: dict[str, tuple[S, EventDecoder[Any]]] = {
            self.topics.sa: (S.SA, EventDecoder(SaEvent)),
            self.topics.approved: (S.DIRECTIVES, EventDecoder(DirectiveEvent)),
            self.topics.decisions: (S.DECISIONS, EventDecoder(DecisionEvent)),
            self.topics.status: (S.STATUS, EventDecoder(DirectiveStatusEvent)),
        }
        self.stream_topics: dict[S, str] = {s: t for t, (s, _) in self.decoders.items()}

    def _metrics(self) -> None:
        r = self.registry
        self.connections = Gauge("c2bus_gateway_connections", "Open console sessions", registry=r)
        self.refused = Counter(
            "c2bus_gateway_refused", "Handshakes refused", ["reason"], registry=r
        )
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
        for stream in S:
            self.event_age.labels(stream.value)
        self.hops = directive_hops(r, ("delivered", "acknowledged"))
        self.flow = EventFlow(r)
        self.lag = ConsumerLag(r)
        for reason in ("missing", "invalid"):
            self.refused.labels(reason)
        self.slow = Counter(
            "c2bus_gateway_slow_disconnects", "Consoles closed as too slow", registry=r
        )
        self.conflated = Counter(
            "c2bus_gateway_conflated",
            "SA frames replaced by a newer state of the same entity before being sent",
            registry=r,
        )
        self.queued = Gauge(
            "c2bus_gateway_queued_bytes", "Event frame bytes waiting for consoles", registry=r
        )
        self.queued.set_function(lambda: sum(s.outbox.bytes for s in self.hub.sessions))
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
        self.lifecycle = Counter(
            "c2bus_gateway_lifecycle_steps",
            "DELIVERED, WILCO, CANTCO and HAVE_DO steps produced",
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
        self.snapshot_entities.set_function(lambda: len(self.latest))

    # --- handshake ----------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, '{"status": "ok"}\n')
        if path == "/readyz":
            if self.ready:
                return connection.respond(HTTPStatus.OK, '{"status": "ready"}\n')
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, '{"status": "not ready"}\n')
        if path == "/metrics":
            body = generate_latest(self.registry)
            headers = Headers(
                [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))]
            )
            return Response(200, "OK", headers, body)
        token = _token(request)
        if not token:
            return self._refuse(connection, "missing", "a bearer token is required")
        try:
            self.verifier.verify(token)
        except AuthError as exc:
            return self._refuse(connection, "invalid", str(exc))
        if not self.ready:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "gateway not ready\n")
        return None  # the handler verifies again: nothing is kept for handshakes that fail

    def _refuse(self, connection: ServerConnection, reason: str, message: str) -> Response:
        self.refused.labels(reason).inc()
        log.info(
            "console.refused", extra={"reason": message, "remote": str(connection.remote_address)}
        )
        response = connection.respond(HTTPStatus.UNAUTHORIZED, message + "\n")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    # --- sessions -----------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        token = _token(connection.request) if connection.request else None
        try:
            verified = self.verifier.verify_token(token or "")
        except AuthError:  # expired between the handshake and now: fail closed
            await connection.close(CloseCode.POLICY, "token no longer valid")
            return
        identity = verified.identity
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
        session = Session(identity, Outbox(self.config.buffer_bytes, self.conflated.inc))
        self.hub.add(session)
        self.connections.inc()
        log.info(
            "console.connected",
            extra={"session": session.id, "sub": identity.subject, "unit": identity.unit},
        )
        try:
            await connection.send(welcome(session.id, identity, HEARTBEAT_S), text=True)
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(self._write(connection, session))
                reader = tasks.create_task(self._read(connection, session))
                guard = tasks.create_task(self._guard(connection, session, verified))
                await asyncio.wait([writer, reader, guard], return_when=asyncio.FIRST_COMPLETED)
                writer.cancel()
                reader.cancel()
                guard.cancel()
        except ConnectionClosed:
            pass
        finally:
            self.hub.remove(session)
            replay = self._replays.pop(session.id, None)
            if replay is not None:
                replay.cancel()
            self.connections.dec()
            log.info("console.disconnected", extra={"session": session.id})

    async def _guard(
        self, connection: ServerConnection, session: Session, verified: Verified
    ) -> None:
        """Close the session when its token expires or is revoked: nothing is sent on a
        token that is no longer good."""
        revocations = self.verifier.revocations
        while True:
            remaining = verified.expires_at - time.time()
            if remaining <= 0:
                self.expired.inc()
                log.info("console.token_expired", extra={"session": session.id})
                await connection.close(CloseCode.TOKEN_EXPIRED, "token expired: reconnect")
                return
            reason = revocations.revoked(verified) if revocations is not None else None
            if reason is not None:
                self.revoked.inc()
                log.warning("console.revoked", extra={"session": session.id, "reason": reason})
                await connection.close(CloseCode.REVOKED, reason)
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining), self._revocations_changed:
                    await self._revocations_changed.wait()

    async def _watch_revocations(self) -> None:
        """Re-read the revocation list as it changes and wake every session's guard."""
        revocations = self.verifier.revocations
        if revocations is None:
            return
        seen = revocations.generation
        while True:
            await asyncio.sleep(revocations.min_interval_s)
            revocations.refresh()
            if revocations.generation != seen:
                seen = revocations.generation
                log.info("gateway.revocations_reloaded", extra={"error": revocations.error})
                async with self._revocations_changed:
                    self._revocations_changed.notify_all()

    async def _write(self, connection: ServerConnection, session: Session) -> None:
        """Send the session's frames; close it as slow when its outbox overflows.

        Frames go out in batches: each is framed by the WebSocket protocol and the batch
        is written to the socket in one call, while the socket takes it (the transport
        pauses writing past its limit, and then the writer waits for it to drain, or for
        the outbox to overflow: a console that stops reading is closed, not waited for).
        """
        outbox = session.outbox
        protocol = connection.protocol
        transport = connection.transport
        overflow = asyncio.ensure_future(outbox.overflow.wait())
        try:
            while not outbox.overflowed:
                if outbox.empty():
                    outbox.wake.clear()
                    await outbox.wake.wait()
                    continue
                if connection.paused:
                    drain = asyncio.ensure_future(connection.drain())
                    await asyncio.wait([drain, overflow], return_when=asyncio.FIRST_COMPLETED)
                    if not drain.done():
                        drain.cancel()
                        break
                    continue
                if protocol.state is not State.OPEN:
                    return
                notes = []
                for _ in range(WRITE_BATCH):
                    item = outbox.take()
                    if item is None:
                        break
                    message, note = item
                    protocol.send_text(message)
                    if note is not None:
                        notes.append(note)
                transport.write(b"".join(protocol.data_to_send()))
                for note in notes:
                    await self._delivered(session, note)
                await asyncio.sleep(0)  # the other consoles' writers, and the consumer
            self.slow.inc()
            log.warning("console.too_slow", extra={"session": session.id})
            await connection.close(CloseCode.SLOW_CONSUMER, "slow consumer: resume")
        except ConnectionClosed:
            return
        finally:
            overflow.cancel()

    async def _read(self, connection: ServerConnection, session: Session) -> None:
        limiter = TokenBucket(self.config.submit_rate, 2 * self.config.submit_rate)
        with contextlib.suppress(ConnectionClosed):
            async for raw in connection:
                correlation = ""
                try:
                    try:
                        message = parse_client_message(raw)
                    except BadMessage as exc:
                        correlation = exc.correlation_id
                        raise Refused("bad_request", str(exc)) from exc
                    correlation = message.id
                    if isinstance(message, Subscribe):
                        await self._subscribe(session, message)
                    elif isinstance(message, Unsubscribe):
                        self._unsubscribe(session, message)
                    elif isinstance(message, Ping):
                        session.outbox.reply(frame("pong", id=message.id))
                    else:
                        wait = limiter.take()
                        if wait:
                            raise Refused(
                                "rate_limited",
                                f"at most {self.config.submit_rate:g} directives and "
                                "acknowledgements per second",
                                retry_after_ms=int(wait * 1000) + 1,
                            )
                        if isinstance(message, Submit):
                            await self._submit(session, message)
                        else:
                            await self._ack(session, message)
                except Refused as exc:
                    self.forbidden.labels(exc.code).inc()
                    session.outbox.reply(error(correlation, exc.code, str(exc), **exc.fields))

    # --- subscriptions ------------------------------------------------------------------

    def _stream_partitions(self, streams: frozenset[S]) -> list[TP]:
        topics = {self.stream_topics[s] for s in streams}
        return sorted(tp for tp in self.live_next if tp[0] in topics)

    async def _subscribe(self, session: Session, message: Subscribe) -> None:
        identity = session.identity
        streams = frozenset(message.streams)
        root = message.units or identity.unit
        if not self.hub.tree.within(root, identity.unit):
            raise Refused("forbidden", f"{root} is not {identity.unit} or a unit below it")
        types = None
        if message.types is not None:
            known = frozenset().union(*(STREAM_TYPES[s] for s in streams))
            unknown = sorted(set(message.types) - known)
            if unknown:
                raise Refused("bad_request", f"types not in the subscribed streams: {unknown}")
            types = frozenset(message.types)
        partitions = self._stream_partitions(streams)
        replay, lost = await self._replay_starts(message.positions or {}, partitions)
        scope = Scope(streams, types, message.area, root, message.units is not None)
        self._apply(session, message, scope, replay, lost)

    async def _replay_starts(
        self, positions: dict[str, int], partitions: list[TP]
    ) -> tuple[dict[TP, int], list[TP]]:
        """Where to replay each given partition from, and which retention has cut short
        (those start at the first offset Kafka still holds)."""
        replay: dict[TP, int] = {}
        for key, offset in positions.items():
            tp = parse_position_key(key)
            if tp is None or tp not in partitions:
                raise Refused("bad_position", f"{key} is not a partition of the subscribed streams")
            replay[tp] = offset + 1
        if not replay:
            return replay, []
        assert self.history is not None
        try:
            starts = await self.history.log_starts(list(replay))
        except (AioKafkaError, OSError) as exc:
            raise Refused("unavailable", f"Kafka cannot be read: {exc}") from exc
        lost = [tp for tp, start in replay.items() if start < starts[tp]]
        for tp in lost:
            replay[tp] = starts[tp]
        return replay, lost

    def _apply(
        self,
        session: Session,
        message: Subscribe,
        scope: Scope,
        replay: dict[TP, int],
        lost: list[TP],
    ) -> None:
        """Start the subscription. No await in here: the scope, the snapshot and the
        partitions to replay are all fixed at one instant of live routing."""
        partitions = self._stream_partitions(scope.streams)
        previous = self._replays.pop(session.id, None)
        if previous is not None:
            previous.cancel()
        outbox = session.outbox
        outbox.clear()
        session.catching_up.clear()
        session.marks.clear()
        session.scope = scope
        sa_partitions = {tp for tp in partitions if tp[0] == self.topics.sa}
        snapshot = S.SA in scope.streams and (
            (not replay and message.snapshot) or any(tp in sa_partitions for tp in lost)
        )
        if snapshot:  # the snapshot stands for every SA partition up to live routing
            for tp in sa_partitions:
                replay.pop(tp, None)
        for tp, start in replay.items():
            session.marks[tp] = start - 1
            if start < self.live_next[tp]:
                session.catching_up.add(tp)
        positions = {
            position_key(*tp): (replay[tp] - 1 if tp in replay else self.live_next[tp] - 1)
            for tp in partitions
            if not (snapshot and tp in sa_partitions)
        }
        mode = "snapshot" if snapshot else ("resume" if message.positions else "live")
        outbox.reply(
            frame(
                "subscribed",
                id=message.id,
                streams=sorted(s.value for s in scope.streams),
                mode=mode,
                positions=positions,
            )
        )
        if lost:
            outbox.reply(
                frame(
                    "resync",
                    id=message.id,
                    partitions=[position_key(*tp) for tp in lost],
                    reason="retention dropped events after the given positions",
                )
            )
        if snapshot:
            self._snapshot(session, sa_partitions)
        self.resumes.labels("resync" if lost else mode).inc()
        if session.catching_up:
            task = asyncio.create_task(self._catch_up(session, replay))
            self._replays[session.id] = task
        elif snapshot:
            outbox.snapshot.append(frame("live", id=message.id))  # after the snapshot
        else:
            outbox.put(frame("live", id=message.id))

    def _snapshot(self, session: Session, sa_partitions: set[TP]) -> None:
        scope = session.scope
        assert scope is not None
        identity, tree, outbox = session.identity, self.hub.tree, session.outbox
        count = 0
        for latest in self.latest.current(datetime.now(UTC)):
            routed = Routed(S.SA, latest.event, latest.label, latest.frame, None)
            if entitled(identity, scope, tree, routed):
                outbox.snapshot.append(latest.frame)
                count += 1
        positions = {position_key(*tp): self.live_next[tp] - 1 for tp in sorted(sa_partitions)}
        outbox.snapshot.append(frame("snapshot_end", count=count, positions=positions))

    async def _catch_up(self, session: Session, starts: dict[TP, int]) -> None:
        assert self.history is not None
        try:
            await self.history.replay(session, {tp: starts[tp] for tp in session.catching_up})
        except (AioKafkaError, OSError) as exc:
            log.error("console.replay_failed", extra={"session": session.id, "error": repr(exc)})
            session.outbox.overflow.set()  # closed with 4008: the console resumes again
            return
        session.outbox.put(frame("live", id=""))  # after the replayed events
        self._replays.pop(session.id, None)

    def _replayed(self, session: Session, record: Any) -> None:
        """One record read back for a resuming session: the live path's checks, for it alone."""
        try:
            routed = self._decode(record)
        except InvalidEvent:
            self.replay_skipped.inc()  # dead-lettered when it was live
            return
        if session.offer(self.hub.tree, routed):
            self.sent.labels(routed.stream.value, event_type(routed.event)).inc()

    def _unsubscribe(self, session: Session, message: Unsubscribe) -> None:
        scope = session.scope
        if scope is not None:
            remaining = scope.streams - frozenset(message.streams)
            session.scope = Scope(
                remaining, scope.types, scope.area, scope.root, scope.units_filter_sa
            )
        streams = sorted(s.value for s in (session.scope.streams if session.scope else ()))
        session.outbox.reply(frame("unsubscribed", id=message.id, streams=streams))

    # --- directives and acknowledgements from consoles ----------------------------------

    async def _submit(self, session: Session, message: Submit) -> None:
        identity = session.identity
        if not identity.has_role(COMMANDER_ROLE):
            raise Refused("forbidden", f"submitting directives needs the role {COMMANDER_ROLE}")
        label = SecurityLabel(message.classification, parse_releasability(message.releasableto))
        if not identity.may_see(label):
            raise Refused(
                "forbidden", "a directive cannot be labelled above what its issuer may see"
            )
        body = message.directive
        event = DirectiveEvent(
            specversion="1.0",
            id=message.directive_id or str(uuid.uuid4()),
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
        position = await self._produce(self.topics.submitted, event)
        self.submitted.inc()
        log.info(
            "directive.submitted",
            extra={"directive_id": event.id, "sub": identity.subject, "target": body.target},
        )
        session.outbox.reply(frame("submitted", id=message.id, directive_id=event.id, pos=position))

    async def _ack(self, session: Session, message: Ack) -> None:
        identity = session.identity
        directive = self.directory.get(message.directive_id)
        if directive is None or not identity.may_see(directive.label):
            raise Refused("unknown_directive", f"no approved directive {message.directive_id}")
        if directive.data.target != identity.unit:
            raise Refused("forbidden", f"only {directive.data.target} acknowledges this directive")
        if message.state == "CANTCO" and not message.reason:
            raise Refused("bad_request", "CANTCO needs a reason")
        state = DirectiveState(message.state)
        status = self._status(directive, state, identity, message.reason)
        position = await self._produce(self.topics.status, status)
        self.lifecycle.labels(state.value).inc()
        delivered_at = self.directory.delivered_at(directive.id)
        if state is not DirectiveState.HAVE_DO and delivered_at is not None:
            self.hops.labels("acknowledged").observe(max(0.0, time.time() - delivered_at))
        log.info(
            "directive.acknowledged",
            extra={"directive_id": directive.id, "state": state.value, "sub": identity.subject},
        )
        session.outbox.reply(
            frame(
                "acked", id=message.id, directive_id=directive.id, state=state.value, pos=position
            )
        )

    async def _delivered(self, session: Session, directive: DirectiveEvent) -> None:
        """Report a directive delivered to a console of its target unit (once per session)."""
        if directive.id in session.delivered or self.producer is None:
            return
        session.delivered.add(directive.id)
        status = self._status(directive, DirectiveState.DELIVERED, session.identity, None)
        try:
            await self.producer.send(
                self.topics.status, encode_event(status), key=status.key().encode()
            )
        except AioKafkaError as exc:
            log.error("directive.delivered_unreported", extra={"error": repr(exc)})
            return
        self.lifecycle.labels(DirectiveState.DELIVERED.value).inc()
        self.flow.sent(self.topics.status, event_type(status))
        log.info(
            "directive.delivered",
            extra={
                "directive_id": directive.id,
                "session": session.id,
                "unit": directive.data.target,
            },
        )
        now = time.time()
        approved_at = self.directory.first_delivery(directive.id, now)
        if approved_at is not None:
            self.hops.labels("delivered").observe(max(0.0, now - approved_at))

    def _status(
        self,
        directive: DirectiveEvent,
        state: DirectiveState,
        identity: Identity,
        reason: str | None,
    ) -> DirectiveStatusEvent:
        return lifecycle_step(
            directive,
            state,
            event_id=f"{state.value.lower()}:{directive.id}:{identity.subject}",
            actor=identity.unit,
            source=self.source,
            now=datetime.now(UTC),
            reason=reason,
        )

    async def _produce(self, topic: str, event: Envelope) -> str:
        if self.producer is None:
            raise Refused("unavailable", "the gateway is shutting down")
        try:
            async with asyncio.timeout(10):
                sent = await self.producer.send(
                    topic, encode_event(event), key=event.key().encode()
                )
                meta = await sent
        except (AioKafkaError, TimeoutError) as exc:
            log.error("produce.failed", extra={"topic": topic, "error": repr(exc)})
            raise Refused("unavailable", f"Kafka did not accept it: {type(exc).__name__}") from exc
        self.flow.sent(topic, event_type(event))
        return f"{meta.topic}/{meta.partition}/{meta.offset}"

    # --- Kafka --------------------------------------------------------------------------

    async def _position_all(self, consumer: AIOKafkaConsumer) -> None:
        """Start SA and approved directives at the snapshot horizon, policy at its start,
        decisions and status at the end."""
        tps = consumer.assignment()
        since = int((time.time() - self.config.sa_horizon_s) * 1000)
        back = [tp for tp in tps if tp.topic in (self.topics.sa, self.topics.approved)]
        found = await consumer.offsets_for_times({tp: since for tp in back})
        for tp in back:
            hit = found.get(tp)
            if hit is not None:
                consumer.seek(tp, hit.offset)
            else:
                await consumer.seek_to_end(tp)
        await consumer.seek_to_beginning(*[tp for tp in tps if tp.topic == self.topics.policy])
        for tp in tps:
            position = await consumer.position(tp)
            if tp.topic != self.topics.policy:
                self.live_next[(tp.topic, tp.partition)] = position

    async def _consume(
        self, consumer: AIOKafkaConsumer, dlq: DeadLetters, stop: asyncio.Event
    ) -> None:
        # A batch is routed without yielding; after each batch the session writers get the
        # loop to flush.
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=200)
            await self._dispatch_batch(consumer, batch, dlq)
            await asyncio.sleep(0)

    async def _dispatch_batch(
        self, consumer: AIOKafkaConsumer, batch: dict[Any, list[Any]], dlq: DeadLetters
    ) -> None:
        """Route a fetched batch, then move live routing past any transaction markers."""
        for records in batch.values():
            for record in records:
                await self._dispatch(record, dlq)
        for tp in batch:
            if tp.topic != self.topics.policy:
                self.live_next[(tp.topic, tp.partition)] = await consumer.position(tp)

    async def _catch_up_at_start(self, consumer: AIOKafkaConsumer, dlq: DeadLetters) -> None:
        """Read the horizon and the policy before accepting consoles."""
        tps = list(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        started = time.monotonic()
        while True:
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                break
            batch = await consumer.getmany(*behind, timeout_ms=200, max_records=1000)
            await self._dispatch_batch(consumer, batch, dlq)
        log.info(
            "gateway.caught_up",
            extra={
                "entities": len(self.latest),
                "policy_version": self.policy.current_version,
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    def _decode(self, record: Any) -> Routed:
        """Decode a record once: its stream, event, label, frame and SA entity key.

        Raises :class:`InvalidEvent` for anything that is not a valid, labelled event.
        """
        stream, decoder = self.decoders[record.topic]
        if record.value is None:
            raise InvalidEvent("record has no value")
        try:
            event: Envelope = decoder.decode_event(record.value)
            label = event.label
        except ValueError as exc:  # a label that does not parse: never delivered
            raise InvalidEvent(str(exc)) from exc
        position = f"{record.topic}/{record.partition}/{record.offset}"
        message = event_frame(stream, position, encode_event(event))
        key = sa_key(event) if stream is S.SA else None
        return Routed(stream, event, label, message, key)

    async def _dispatch(self, record: Any, dlq: DeadLetters) -> None:
        if record.topic == self.topics.policy:
            if self.policy.apply(record.value) and self.policy.current is not None:
                self.hub.tree = UnitTree(self.policy.current.policy.superiors)
            return
        tp = (record.topic, record.partition)
        try:
            routed = self._decode(record)
        except InvalidEvent as exc:
            self.live_next[tp] = record.offset + 1
            await dlq.send(record, "gateway.decode", exc)
            return
        kind = event_type(routed.event)
        self.flow.received(record.topic, kind)
        if routed.key is not None:
            self.latest.update(routed.key, Latest(routed.event, routed.label, routed.message))
        elif isinstance(routed.event, DirectiveEvent):
            self.directory.add(routed.event, record.timestamp / 1000)
        delivered = self.hub.route(routed, tp, record.offset)
        # Live routing has now handled this offset: a replay may hand over past it.
        self.live_next[tp] = record.offset + 1
        if delivered:
            self.sent.labels(routed.stream.value, kind).inc(delivered)
            age = time.time() - routed.event.time.timestamp()
            self.event_age.labels(routed.stream.value).observe(max(0.0, age))

    async def serve(self) -> Server:
        """Start accepting consoles on the configured address (``self.port`` is set)."""
        server = await serve(
            self._handle,
            self.settings.host,
            self.settings.port,
            process_request=self._process_request,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            max_size=64 * 1024,
            # No permessage-deflate: it would compress every frame once per console,
            # undoing encode-once fan-out, and hide the bytes really queued per console.
            compression=None,
            ping_interval=HEARTBEAT_S,
            ping_timeout=HEARTBEAT_S,
            backlog=1024,
        )
        self.port = next(iter(server.sockets)).getsockname()[1]
        return server

    async def run(self, stop: asyncio.Event) -> None:
        bootstrap = self.settings.kafka.bootstrap
        consumer = new_consumer(
            bootstrap, self.settings.instance, group_id=None, auto_offset_reset="latest"
        )
        producer = new_producer(bootstrap, self.settings.instance)
        await start_clients(bootstrap, producer, consumer)
        timeout = self.settings.shutdown_timeout_s
        dlq = DeadLetters(producer, self.topics.dlq, self.settings.instance, self.registry)
        self.history = History(
            bootstrap,
            self.settings.instance,
            self.live_next,
            self._replayed,
            self.config.replays,
        )
        server: Server | None = None
        try:
            await assign_all(consumer, bootstrap, [*self.decoders, self.topics.policy])
            await self._position_all(consumer)
            await self._catch_up_at_start(consumer, dlq)
            self.producer = producer
            server = await self.serve()
            self.ready = True
            log.info("gateway.started", extra={"port": self.port})
            watcher = asyncio.ensure_future(self._watch_revocations())
            lag = asyncio.ensure_future(self.lag.follow(lambda: consumer, stop))
            try:
                await self._consume(consumer, dlq, stop)
            finally:
                watcher.cancel()
                lag.cancel()
        finally:
            self.ready = False
            if server is not None:
                server.close(close_connections=True)  # close code 1001, going away
                await bounded("websockets.close", server.wait_closed(), timeout)
            for task in list(self._replays.values()):
                task.cancel()
            await bounded("history.close", self.history.close(), timeout)
            self.producer = None
            await bounded("consumer.stop", consumer.stop(), timeout)
            await bounded("producer.stop", producer.stop(), timeout)


def _token(request: Request) -> str | None:
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is not None:
        return token
    query = parse_qs(urlsplit(request.path).query)
    values = query.get("access_token")
    return values[0] if values else None


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    verifier = verifier_for(settings.auth)
    await Gateway(settings, verifier).run(stop)
