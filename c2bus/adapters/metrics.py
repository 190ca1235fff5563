"""Metrics every Kafka-facing service shares: consumer lag, events in and out, hop latency.

Names follow Prometheus conventions (``c2bus_`` prefix, base units, ``_total`` counters);
the service is the scrape job's label, so the same metric reads the same in every service.
``docs/observability.md`` lists every metric and what watches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from c2bus.adapters.kafka import REFUSALS

log = logging.getLogger(__name__)

#: Latency buckets (seconds) for the hops of an event or a directive: 1 ms … 1 min.
HOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

#: The hops of a directive's life, each measured from the step before it.
DIRECTIVE_HOPS = ("decided", "delivered", "acknowledged")


def seconds_since(then: datetime, now: datetime) -> float:
    """``now - then`` in seconds, never negative (clocks of two hosts may disagree)."""
    return max(0.0, (now - then).total_seconds())


class EventFlow:
    """``c2bus_events_in_total{source,type}`` and ``c2bus_events_out_total{destination,type}``.

    ``source`` and ``destination`` are topic names, or ``http`` (ingest) and ``console``
    (the gateway's deliveries)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_in = Counter(
            "c2bus_events_in",
            "Events taken in, by where they came from and their CloudEvents type",
            ["source", "type"],
            registry=registry,
        )
        self.events_out = Counter(
            "c2bus_events_out",
            "Events sent on, by where they went and their CloudEvents type",
            ["destination", "type"],
            registry=registry,
        )

    def received(self, source: str, event_type: str, count: int = 1) -> None:
        self.events_in.labels(source, event_type).inc(count)

    def sent(self, destination: str, event_type: str, count: int = 1) -> None:
        self.events_out.labels(destination, event_type).inc(count)


class KafkaRefusals(Collector):
    """``c2bus_kafka_refusals_total{error}``: steps of this process's Kafka clients that a
    broker refused for an ACL or the credentials (``TopicAuthorizationFailedError``…),
    counted where they happen (every Kafka step, every client start). Each known error
    reads 0 from the start, so the first refusal is an increase an alert sees."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "c2bus_kafka_refusals",
            "Kafka client steps a broker refused (an ACL or the credentials), by library error",
            labels=["error"],
        )
        for error, count in sorted(REFUSALS.items()):
            family.add_metric([error], count)
        yield family


def export_kafka_refusals(registry: CollectorRegistry) -> None:
    registry.register(KafkaRefusals())


def directive_hops(registry: CollectorRegistry, hops: tuple[str, ...]) -> Histogram:
    """``c2bus_directive_hop_seconds{hop}``: each step of a directive's life, measured from
    the step before it (submitted → ``decided`` → ``delivered`` → ``acknowledged``).

    Each service declares the hops it observes, so they read as zero until the first
    observation rather than being absent."""
    histogram = Histogram(
        "c2bus_directive_hop_seconds",
        "Time a directive took to reach a step of its lifecycle from the step before it",
        ["hop"],
        buckets=HOP_BUCKETS,
        registry=registry,
    )
    for hop in hops:
        histogram.labels(hop)
    return histogram


class ConsumerLag:
    """``c2bus_consumer_lag_records{topic,partition}``: records on the broker that the
    consumer has not fetched yet, per assigned partition.

    The lag is the partition's last stable offset (``read_committed``) or high watermark,
    as of the consumer's latest fetch response, less the consumer's position. A partition
    that is no longer assigned disappears from the metric."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "c2bus_consumer_lag_records",
            "Records on the broker not yet fetched by this service, per partition",
            ["topic", "partition"],
            registry=registry,
        )
        self._shown: set[tuple[str, str]] = set()

    async def update(self, consumer: AIOKafkaConsumer) -> None:
        shown: set[tuple[str, str]] = set()
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = consumer.highwater(tp)
            if end is None:
                continue  # no fetch response for it yet
            try:
                async with asyncio.timeout(1.0):
                    position = await consumer.position(tp)
            except (KafkaError, TimeoutError):
                continue
            labels = (tp.topic, str(tp.partition))
            self.gauge.labels(*labels).set(max(0, end - position))
            shown.add(labels)
        for labels in self._shown - shown:
            with contextlib.suppress(KeyError):
                self.gauge.remove(*labels)
        self._shown = shown

    async def follow(
        self,
        consumer: Callable[[], AIOKafkaConsumer | None],
        stop: asyncio.Event,
        every_s: float = 2.0,
    ) -> None:
        """Refresh the gauge every ``every_s`` until ``stop``, for whichever consumer
        ``consumer()`` returns then (a service may replace its consumer)."""
        while not stop.is_set():
            try:
                current = consumer()
                if current is not None:
                    await self.update(current)
            except Exception as exc:  # a metric must never stop the service
                log.warning("metrics.lag_failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await stop.wait()
