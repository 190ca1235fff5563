"""The gateway process: Kafka in, WebSocket consoles out.

One group-less consumer reads every partition of the SA, approved-directive and decision
topics (``read_committed``), from the end: each gateway serves its own consoles, so many can
run side by side. Each event is decoded once, its frame encoded once, and offered to every
entitled session. Consoles authenticate at the handshake with a bearer token (header, or
``access_token`` query parameter for browsers) and must speak the ``c2bus.v1`` subprotocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiokafka import AIOKafkaConsumer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..domain.codec import EventDecoder, encode_event
from ..domain.events import DecisionEvent, DirectiveEvent, Envelope, SaEvent
from ..errors import AuthError, InvalidEvent
from ..runtime.auth import TokenVerifier, Verified, bearer_token, verifier_for
from ..runtime.dlq import DeadLetters
from ..runtime.kafka import assign_all, new_consumer, new_producer, start_clients
from ..runtime.lifecycle import bounded
from ..runtime.settings import ServiceSettings
from ..runtime.topics import TopicNames
from .hub import Hub, Session
from .protocol import (
    SUBPROTOCOL,
    BadMessage,
    CloseCode,
    Ping,
    Subscribe,
    Unsubscribe,
    event_frame,
    frame,
    parse_client_message,
    welcome,
)
from .protocol import Stream as S

log = logging.getLogger(__name__)
HEARTBEAT_S = 20.0
# Below this many bytes waiting in the socket's user-space buffer, send() returns at once.
WRITE_BUFFER_HIGH = 32 * 1024


class Gateway:
    def __init__(self, settings: ServiceSettings, verifier: TokenVerifier) -> None:
        self.settings = settings
        self.verifier = verifier
        self.topics = TopicNames(settings.kafka.topic_prefix)
        self.hub = Hub()
        self.ready = False
        self.port = settings.port
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "c2bus_gateway_connections", "Open console sessions", registry=self.registry
        )
        self.refused = Counter(
            "c2bus_gateway_refused", "Handshakes refused", ["reason"], registry=self.registry
        )
        self.sent = Counter(
            "c2bus_gateway_events_sent", "Event frames queued", ["stream"], registry=self.registry
        )
        self.slow = Counter(
            "c2bus_gateway_slow_disconnects", "Consoles closed as too slow", registry=self.registry
        )
        self.expired = Counter(
            "c2bus_gateway_expired_sessions",
            "Sessions closed because their token expired",
            registry=self.registry,
        )
        self.revoked = Counter(
            "c2bus_gateway_revoked_sessions",
            "Sessions closed because their token or subject was revoked",
            registry=self.registry,
        )
        self._revocations_changed = asyncio.Condition()
        self.decoders: dict[str, tuple[S, EventDecoder[Any]]] = {
            self.topics.sa: (S.SA, EventDecoder(SaEvent)),
            self.topics.approved: (S.DIRECTIVES, EventDecoder(DirectiveEvent)),
            self.topics.decisions: (S.DECISIONS, EventDecoder(DecisionEvent)),
        }

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
            identity = self.verifier.verify(token)
        except AuthError as exc:
            return self._refuse(connection, "invalid", str(exc))
        if not self.ready:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "gateway not ready\n")
        del identity  # the handler verifies again: nothing is kept for handshakes that fail later
        return None

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
        session = Session(identity, self.settings.gateway_queue_max)
        self.hub.add(session)
        self.connections.inc()
        log.info(
            "console.connected",
            extra={"session": session.id, "sub": identity.subject, "unit": identity.unit},
        )
        try:
            await connection.send(welcome(session.id, identity, HEARTBEAT_S))
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(self._write(connection, session))
                reader = tasks.create_task(self._read(connection, session))
                expiry = tasks.create_task(self._guard(connection, session, verified))
                await asyncio.wait([writer, reader, expiry], return_when=asyncio.FIRST_COMPLETED)
                writer.cancel()
                reader.cancel()
                expiry.cancel()
        except ConnectionClosed:
            pass
        finally:
            self.hub.remove(session)
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
        """Send the session's queued frames; close it as slow when its queue overflows.

        A console that stops reading blocks ``send`` once the socket buffers are full; the
        overflow is watched during such a send too, so the slow console is closed instead
        of holding its frames forever.
        """
        overflow = asyncio.ensure_future(session.overflowed.wait())
        try:
            while not overflow.done():
                if session.queue.empty():
                    get = asyncio.ensure_future(session.queue.get())
                    await asyncio.wait([get, overflow], return_when=asyncio.FIRST_COMPLETED)
                    if not get.done():
                        get.cancel()
                        break
                    message = get.result()
                else:
                    message = session.queue.get_nowait()
                if connection.transport.get_write_buffer_size() < WRITE_BUFFER_HIGH:
                    await connection.send(message)  # room in the buffer: does not block
                    continue
                send = asyncio.ensure_future(connection.send(message))
                await asyncio.wait([send, overflow], return_when=asyncio.FIRST_COMPLETED)
                if not send.done():
                    send.cancel()
                    break
                send.result()
            self.slow.inc()
            log.warning("console.too_slow", extra={"session": session.id})
            await connection.close(CloseCode.SLOW_CONSUMER, "slow consumer: resume")
        except ConnectionClosed:
            return
        finally:
            overflow.cancel()

    async def _read(self, connection: ServerConnection, session: Session) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._read_messages(connection, session)

    async def _read_messages(self, connection: ServerConnection, session: Session) -> None:
        async for raw in connection:
            try:
                message = parse_client_message(raw)
            except BadMessage as exc:
                await connection.send(
                    frame("error", id=exc.correlation_id, code="bad_request", message=str(exc))
                )
                continue
            if isinstance(message, Subscribe):
                session.streams.update(message.streams)
                await connection.send(
                    frame(
                        "subscribed",
                        id=message.id,
                        streams=sorted(s.value for s in session.streams),
                    )
                )
            elif isinstance(message, Unsubscribe):
                session.streams.difference_update(message.streams)
                await connection.send(
                    frame(
                        "unsubscribed",
                        id=message.id,
                        streams=sorted(s.value for s in session.streams),
                    )
                )
            elif isinstance(message, Ping):
                await connection.send(frame("pong", id=message.id))

    # --- Kafka --------------------------------------------------------------------------

    async def _consume(
        self, consumer: AIOKafkaConsumer, dlq: DeadLetters, stop: asyncio.Event
    ) -> None:
        # A batch is routed without yielding, so it must fit well inside a console's queue;
        # after each batch the session writers get the loop to flush.
        batch_size = max(1, min(200, self.settings.gateway_queue_max // 4))
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=batch_size)
            for records in batch.values():
                for record in records:
                    await self._dispatch(record, dlq)
            await asyncio.sleep(0)

    async def _dispatch(self, record: Any, dlq: DeadLetters) -> None:
        stream, decoder = self.decoders[record.topic]
        try:
            if record.value is None:
                raise InvalidEvent("record has no value")
            event: Envelope = decoder.decode_event(record.value)
            label = event.label
        except (InvalidEvent, ValueError) as exc:
            error = exc if isinstance(exc, InvalidEvent) else InvalidEvent(str(exc))
            await dlq.send(record, "gateway.decode", error)
            return
        position = f"{record.topic}/{record.partition}/{record.offset}"
        message = event_frame(stream, position, encode_event(event))
        delivered = self.hub.route(stream, event, label, message)
        if delivered:
            self.sent.labels(stream.value).inc(delivered)

    async def run(self, stop: asyncio.Event) -> None:
        bootstrap = self.settings.kafka.bootstrap
        consumer = new_consumer(
            bootstrap, self.settings.instance, group_id=None, auto_offset_reset="latest"
        )
        producer = new_producer(bootstrap, self.settings.instance)
        await start_clients(bootstrap, producer, consumer)
        timeout = self.settings.shutdown_timeout_s
        dlq = DeadLetters(producer, self.topics.dlq, self.settings.instance, self.registry)
        server: Server | None = None
        try:
            await assign_all(consumer, bootstrap, list(self.decoders))
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
            )
            self.port = next(iter(server.sockets)).getsockname()[1]
            self.ready = True
            log.info("gateway.started", extra={"port": self.port})
            watcher = asyncio.ensure_future(self._watch_revocations())
            try:
                await self._consume(consumer, dlq, stop)
            finally:
                watcher.cancel()
        finally:
            self.ready = False
            if server is not None:
                server.close(close_connections=True)  # close code 1001, going away
                await bounded("websockets.close", server.wait_closed(), timeout)
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
