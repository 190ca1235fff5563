"""Dead letters: input that cannot be processed goes to the DLQ topic, never blocks a partition.

The record keeps its original key and value; headers follow the Kafka Connect dead-letter
convention so existing tooling can read them:

====================================== ==============================================
``__connect.errors.topic``             source topic
``__connect.errors.partition``         source partition
``__connect.errors.offset``            source offset
``__connect.errors.stage``             where it failed, e.g. ``enforcer.decode``
``__connect.errors.connector.name``    the service that rejected it
``__connect.errors.class.name``        the error class in c2bus terms (``InvalidEvent``)
``__connect.errors.exception.class.name`` the same (Connect's name for it)
``__connect.errors.exception.message`` the reason, with the JSON path where known
====================================== ==============================================
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter

PREFIX = "__connect.errors."
log = logging.getLogger(__name__)


def dead_letter_headers(
    record: Any, stage: str, service: str, error: BaseException
) -> list[tuple[str, bytes]]:
    """The error headers for a rejected ``ConsumerRecord``."""
    name = type(error).__name__
    values = {
        "topic": record.topic,
        "partition": str(record.partition),
        "offset": str(record.offset),
        "stage": stage,
        "connector.name": service,
        "class.name": name,
        "exception.class.name": name,
        "exception.message": str(error)[:4000],
    }
    return [(PREFIX + key, value.encode()) for key, value in values.items()]


class DeadLetters:
    """Sends rejected records to the DLQ topic and counts them by stage and error class."""

    def __init__(
        self,
        producer: AIOKafkaProducer | None,
        topic: str,
        service: str,
        registry: CollectorRegistry,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.service = service
        self.counter = Counter(
            "c2bus_dead_letters",
            "Records sent to the dead-letter topic, by stage and reason (the error class)",
            ["stage", "reason"],
            registry=registry,
        )

    def expect(self, stage: str, error: type[BaseException]) -> None:
        """Export the count of ``stage``'s dead letters for ``error`` from 0, so that the first
        one is an increase an alert sees."""
        self.counter.labels(stage, error.__name__)

    async def send(
        self,
        record: Any,
        stage: str,
        error: BaseException,
        producer: AIOKafkaProducer | None = None,
    ) -> asyncio.Future[Any]:
        """Queue the dead letter on ``producer`` or the default one (inside its transaction,
        if one is open); returns its delivery future."""
        headers = dead_letter_headers(record, stage, self.service, error)
        producer = producer or self.producer
        if producer is None:
            raise ValueError("no producer to send the dead letter with")
        delivery: asyncio.Future[Any] = await producer.send(
            self.topic, record.value, key=record.key, headers=headers
        )
        self.counter.labels(stage, type(error).__name__).inc()
        log.warning(
            "record.dead_lettered",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "stage": stage,
                "error": str(error)[:500],
            },
        )
        return delivery
