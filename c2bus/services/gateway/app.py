"""The gateway process: Kafka in, WebSocket consoles out, and consoles' directives back in.

One group-less consumer reads every partition of the SA, approved-directive, decision,
directive-status and policy topics (``read_committed``): each gateway serves its own
consoles, so many can run side by side. At start-up it reads the SA and approved topics
back over the snapshot horizon and the policy topic from its start, and only then accepts
consoles. Each event is decoded once, its frame encoded once, and offered to every entitled
session. Consoles authenticate at the handshake with a bearer token and speak ``c2bus.v1``.

Metrics, health and readiness are served on an ops listener of their own
(``C2BUS_GATEWAY_OPS_PORT``), apart from the console port.

The parts: ``handshake`` (health on the console port, authentication), ``sessions`` (a
console's tasks), ``requests`` (subscribe, resume, submit, acknowledge), ``routing`` (the
pure routing core: outboxes, who gets what, subscription start), ``history`` (resume from
Kafka), ``intake`` (Kafka in), ``reports`` (lifecycle steps out), ``metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from prometheus_client import CollectorRegistry
from websockets.asyncio.server import Server, serve

from c2bus.adapters.auth import TokenVerifier, verifier_for
from c2bus.adapters.dlq import DeadLetters
from c2bus.adapters.kafka import assign_all, new_consumer, new_producer, start_clients
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.metrics import export_kafka_refusals
from c2bus.adapters.ops import HttpServer, ops_app
from c2bus.adapters.policy_source import PolicySource
from c2bus.adapters.settings import ServiceSettings
from c2bus.adapters.signing import signer_for, trust_for
from c2bus.adapters.topics import TopicNames
from c2bus.core.protocol import MAX_FRAME_BYTES, SUBPROTOCOL
from c2bus.errors import UnverifiedRecord
from c2bus.services.gateway.handshake import Handshake
from c2bus.services.gateway.history import History
from c2bus.services.gateway.intake import Intake
from c2bus.services.gateway.metrics import GatewayMetrics
from c2bus.services.gateway.reports import Reports
from c2bus.services.gateway.requests import Requests
from c2bus.services.gateway.routing import Hub
from c2bus.services.gateway.sessions import Sessions
from c2bus.services.gateway.state import DirectiveDirectory, LatestSa

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: ServiceSettings, verifier: TokenVerifier) -> None:
        self.settings = settings
        self.config = settings.gateway
        self.topics = topics = TopicNames(settings.kafka.topic_prefix)
        self.hub = hub = Hub()
        self.ready = False
        self.port = settings.port
        source = f"urn:c2bus:gateway:{settings.instance}"
        self.latest = LatestSa(timedelta(seconds=self.config.sa_horizon_s))
        self.directory = DirectiveDirectory()
        self.registry = CollectorRegistry()
        export_kafka_refusals(self.registry)
        self.metrics = GatewayMetrics(
            self.registry,
            queued_bytes=lambda: sum(s.outbox.bytes for s in hub.sessions),
            snapshot_entities=lambda: len(self.latest),
        )
        self.policy = PolicySource(settings.policy_set_id, self.registry)
        self.intake = Intake(
            topics,
            hub=hub,
            latest=self.latest,
            directory=self.directory,
            policy=self.policy,
            metrics=self.metrics,
            trust=trust_for(settings.signing),
            horizon=timedelta(seconds=self.config.sa_horizon_s),
        )
        self.history = History(
            settings.kafka,
            settings.instance,
            hub.live_next,
            self.intake.replayed,
            self.config.replays,
        )
        self.reports = Reports(
            topics.status,
            source,
            self.directory,
            self.metrics,
            signer_for(settings.signing, "gateway"),
            actor=f"gateway:{settings.instance}",
        )
        requests = Requests(
            config=self.config,
            topics=topics,
            hub=hub,
            latest=self.latest,
            directory=self.directory,
            stream_topics=self.intake.stream_topics,
            history=self.history,
            reports=self.reports,
            metrics=self.metrics,
            source=source,
        )
        self.sessions = Sessions(
            verifier=verifier,
            hub=hub,
            requests=requests,
            reports=self.reports,
            metrics=self.metrics,
            buffer_bytes=self.config.buffer_bytes,
            heartbeat_s=self.config.heartbeat_s,
        )
        self.handshake = Handshake(verifier, self.metrics.refused, lambda: self.ready)
        self.ops = HttpServer(
            ops_app("c2bus gateway", self.registry, lambda: self.ready),
            settings.host,
            self.config.ops_port,
            settings.http_head_timeout_s,
        )

    async def serve(self) -> Server:
        """Start accepting consoles on the configured address (``self.port`` is set)."""
        server = await serve(
            self.sessions.handle,
            self.settings.host,
            self.settings.port,
            process_request=self.handshake.process_request,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            max_size=MAX_FRAME_BYTES,  # longer: 1009; over MAX_REQUEST_BYTES: too_large
            # No permessage-deflate: it would compress every frame once per console,
            # undoing encode-once fan-out, and hide the bytes really queued per console.
            compression=None,
            # The sessions' own heartbeat pings (4008 when a pong is late, not 1011).
            ping_interval=None,
            backlog=1024,
        )
        self.port = next(iter(server.sockets)).getsockname()[1]
        return server

    async def run(self, stop: asyncio.Event) -> None:
        """Catch up, accept consoles, route until ``stop``; then close consoles (1001),
        stop replays, flush what is produced and close the clients, each step bounded."""
        kafka = self.settings.kafka
        self.ops.bind()  # a port in use fails before anything connects
        consumer = new_consumer(
            kafka, self.settings.instance, group_id=None, auto_offset_reset="latest"
        )
        producer = new_producer(kafka, self.settings.instance)
        await start_clients(kafka, producer, consumer)
        timeout = self.settings.shutdown_timeout_s
        dlq = DeadLetters(producer, self.topics.dlq, self.settings.instance, self.registry)
        dlq.expect("gateway.decode", UnverifiedRecord)
        server: Server | None = None
        ops = asyncio.create_task(self.ops.serve())  # answers "not ready" while catching up
        try:
            await assign_all(consumer, kafka, self.intake.topic_names)
            await self.intake.position(consumer, self.config.sa_horizon_s)
            await self.intake.catch_up(consumer, dlq)
            self.reports.producer = producer
            server = await self.serve()
            self.ready = True
            log.info("gateway.started", extra={"port": self.port, "ops_port": self.ops.port})
            async with asyncio.TaskGroup() as tasks:
                background = [
                    tasks.create_task(self.sessions.watch_revocations()),
                    tasks.create_task(self.metrics.lag.follow(lambda: consumer, stop)),
                    tasks.create_task(self.reports.run()),
                    tasks.create_task(self.reports.expire()),
                ]
                try:
                    await self.intake.consume(consumer, dlq, stop)
                finally:
                    for task in background:
                        task.cancel()
        finally:
            self.ready = False
            if server is not None:
                server.close(close_connections=True)  # close code 1001, going away
                await bounded("websockets.close", server.wait_closed(), timeout)
            await bounded("history.close", self.history.close(), timeout)
            self.reports.producer = None
            await bounded("consumer.stop", consumer.stop(), timeout)
            await bounded("producer.stop", producer.stop(), timeout)
            self.ops.stop()
            await bounded("ops.stop", ops, timeout)


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    verifier = verifier_for(settings.auth)
    await Gateway(settings, verifier).run(stop)
