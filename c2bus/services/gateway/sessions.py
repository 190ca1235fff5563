"""One console session over its WebSocket: authenticated at the handshake, then four tasks
in the session's own task group (the writer, the reader, the token guard, the heartbeat)
and, during a resume, its replay. The session ends when any of them ends: the console
closed, its outbox overflowed or it left a ping unanswered (4008, slow consumer), its token
expired (4001) or was revoked (4003)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from c2bus.adapters.auth import TokenVerifier, Verified
from c2bus.core.protocol import CloseCode, welcome
from c2bus.errors import AuthError
from c2bus.services.gateway.handshake import token_of
from c2bus.services.gateway.metrics import GatewayMetrics
from c2bus.services.gateway.reports import Reports
from c2bus.services.gateway.requests import Requests, Spawn
from c2bus.services.gateway.routing import Hub, Outbox, Session
from c2bus.services.gateway.signals import ConsoleSignals

log = logging.getLogger(__name__)
# Frames written to a console's socket in one call, at most.
WRITE_BATCH = 256
# The kernel's send buffer per console socket, fixed (instead of autotuned up to megabytes)
# so that what a console can have in flight is bounded and a stalled one is found early.
SOCKET_SEND_BUFFER = 128 * 1024
#: The writer frames messages with the connection's sans-I/O protocol and writes them to its
#: transport in batches (``connection.protocol``, ``.transport``, ``.paused``, ``.drain``):
#: websockets internals, so the dependency is pinned to this major version and
#: tests/unit/test_websockets_internals.py fails loudly on any other.
WEBSOCKETS_MAJOR = 17


class Sessions:
    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        hub: Hub,
        requests: Requests,
        reports: Reports,
        metrics: GatewayMetrics,
        buffer_bytes: int,
        heartbeat_s: float,
    ) -> None:
        self.verifier = verifier
        self.hub = hub
        self.requests = requests
        self.reports = reports
        self.metrics = metrics
        self.buffer_bytes = buffer_bytes
        self.heartbeat_s = heartbeat_s
        self._revocations_changed = asyncio.Condition()

    async def handle(self, connection: ServerConnection) -> None:
        try:
            token = token_of(connection.request) if connection.request else None
            verified = self.verifier.verify_token(token or "")
        except AuthError:  # expired between the handshake and now: fail closed
            await connection.close(CloseCode.POLICY, "token no longer valid")
            return
        identity = verified.identity
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
        signals = ConsoleSignals()
        outbox = Outbox(self.buffer_bytes, self.metrics.conflated.inc, signals)
        session = Session(identity, outbox)
        self.hub.add(session)
        self.metrics.connections.inc()
        log.info(
            "console.connected",
            extra={"session": session.id, "sub": identity.subject, "unit": identity.unit},
        )
        try:
            await connection.send(welcome(session.id, identity, self.heartbeat_s), text=True)
            async with asyncio.TaskGroup() as tasks:
                replay: list[asyncio.Task[None]] = []

                def spawn(work: Coroutine[Any, Any, None] | None) -> None:
                    """A resume's replay, replacing the one before it."""
                    for task in replay:
                        task.cancel()
                    replay[:] = [tasks.create_task(work)] if work is not None else []

                main = [
                    tasks.create_task(self._write(connection, session, signals)),
                    tasks.create_task(self._read(connection, session, spawn)),
                    tasks.create_task(self._guard(connection, session, verified)),
                    tasks.create_task(self._heartbeat(connection, session)),
                ]
                await asyncio.wait(main, return_when=asyncio.FIRST_COMPLETED)
                for task in main + replay:
                    task.cancel()
        except* ConnectionClosed:
            pass
        finally:
            self.hub.remove(session)
            self.metrics.connections.dec()
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
                self.metrics.expired.inc()
                log.info("console.token_expired", extra={"session": session.id})
                await connection.close(CloseCode.TOKEN_EXPIRED, "token expired: reconnect")
                return
            reason = revocations.revoked(verified) if revocations is not None else None
            if reason is not None:
                self.metrics.revoked.inc()
                log.warning("console.revoked", extra={"session": session.id, "reason": reason})
                await connection.close(CloseCode.REVOKED, reason)
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining), self._revocations_changed:
                    await self._revocations_changed.wait()

    async def _heartbeat(self, connection: ServerConnection, session: Session) -> None:
        """Ping the console every ``heartbeat_s``; close it as slow (4008) when a pong does
        not come back within as long again. A console that stops reading stops answering
        pings too, long before its outbox fills at ordinary rates: this is how it is found
        then, and a link that died without a FIN with it."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                async with asyncio.timeout(self.heartbeat_s):
                    pong = await connection.ping()  # waits while the socket takes nothing
                    await pong
            except TimeoutError:
                self.metrics.slow.labels("no_pong").inc()
                log.warning(
                    "console.no_pong", extra={"session": session.id, "timeout_s": self.heartbeat_s}
                )
                await connection.close(
                    CloseCode.SLOW_CONSUMER,
                    f"slow consumer: no pong within {self.heartbeat_s:g} s: resume",
                )
                return

    async def watch_revocations(self) -> None:
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

    async def _write(
        self, connection: ServerConnection, session: Session, signals: ConsoleSignals
    ) -> None:
        """Send the session's frames; close it as slow when its outbox overflows."""
        try:
            if await self._send(connection, session, signals):
                outbox = session.outbox
                if outbox.closing is not None:
                    code, reason = outbox.closing
                    log.info("console.closed", extra={"session": session.id, "code": code})
                    await connection.close(code, reason)
                    return
                self.metrics.slow.labels("outbox_full").inc()
                log.warning("console.too_slow", extra={"session": session.id})
                await connection.close(CloseCode.SLOW_CONSUMER, "slow consumer: resume")
        except* ConnectionClosed:
            pass

    async def _send(
        self, connection: ServerConnection, session: Session, signals: ConsoleSignals
    ) -> bool:
        """Send frames until the outbox overflows or is to be closed (True), or the
        connection is closing.

        Frames go out in batches: each is framed by the WebSocket protocol and the batch
        is written to the socket in one call, while the socket takes it (the transport
        pauses writing past its limit, and then the writer waits for it to drain, or for
        the outbox to overflow: a console that stops reading is closed, not waited for).
        """
        outbox = session.outbox
        protocol = connection.protocol
        transport = connection.transport
        woken = signals.woken
        while not outbox.overflowed and outbox.closing is None:
            if outbox.empty():
                woken.clear()
                await woken.wait()
                continue
            if connection.paused:
                await _drained(connection, outbox, woken)
                continue
            if protocol.state is not State.OPEN:
                return False
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
                await self.reports.delivered(session, note)
            await asyncio.sleep(0)  # the other consoles' writers, and the consumer
        return True

    async def _read(self, connection: ServerConnection, session: Session, spawn: Spawn) -> None:
        limiter = self.requests.limiter()
        with contextlib.suppress(ConnectionClosed):
            async for raw in connection:
                await self.requests.handle(session, raw, limiter, spawn)


async def _drained(connection: ServerConnection, outbox: Outbox, woken: asyncio.Event) -> None:
    """Wait until the socket takes more, or the outbox overflows."""
    async with asyncio.TaskGroup() as waits:
        drain = waits.create_task(connection.drain())
        while not drain.done() and not outbox.overflowed:
            woken.clear()
            wake = waits.create_task(woken.wait())
            await asyncio.wait([drain, wake], return_when=asyncio.FIRST_COMPLETED)
            wake.cancel()
        drain.cancel()
