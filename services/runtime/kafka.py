"""Thin asyncio adapters over aiokafka: reaching a cluster, and an admin client.

aiokafka's exceptions are translated here into :mod:`services.errors` so callers handle
one tree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError as AioKafkaError

from ..errors import KafkaUnavailable


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What a metadata request told us about a cluster."""

    bootstrap: str
    broker_ids: tuple[int, ...]
    controller_id: int | None
    topics: frozenset[str]


async def probe(bootstrap: str, timeout_s: float = 10.0) -> ClusterInfo:
    """Ask the cluster for its metadata; raise :class:`KafkaUnavailable` if nobody answers."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        retry_backoff_ms=200,
        metadata_max_age_ms=60_000,
    )
    try:
        async with asyncio.timeout(timeout_s):
            await client.bootstrap()
            metadata = await client.fetch_all_metadata()
    except (TimeoutError, AioKafkaError, OSError) as exc:
        raise KafkaUnavailable(
            f"no Kafka broker answered at {bootstrap} within {timeout_s:g}s"
        ) from exc
    finally:
        await client.close()
    return ClusterInfo(
        bootstrap=bootstrap,
        broker_ids=tuple(sorted(b.nodeId for b in metadata.brokers())),
        controller_id=metadata.controller.nodeId if metadata.controller else None,
        topics=frozenset(metadata.topics()),
    )


@contextlib.asynccontextmanager
async def admin_client(
    bootstrap: str, timeout_ms: int = 30_000
) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client, closed on exit; unreachable clusters raise KafkaUnavailable."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
    except (AioKafkaError, OSError) as exc:
        await admin.close()
        raise KafkaUnavailable(f"no Kafka broker answered at {bootstrap}") from exc
    try:
        yield admin
    finally:
        await admin.close()
