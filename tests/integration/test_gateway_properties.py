"""Properties of the gateway over random identities, labels and scopes, on real Kafka and
real sockets: on the live, snapshot and resume paths alike, a console receives exactly the
events the rules let it see (the oracle in ``corpus.py``), none that they forbid, none
twice. Random consoles disconnected at random during a stream of 10,000 events end with
exactly their filtered set.

Each run draws a new seed (printed; set ``C2BUS_TEST_SEED`` to repeat one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from c2bus.adapters.kafka import client_options
from c2bus.adapters.signing import APPROVED, DECISIONS, STATUS
from c2bus.adapters.topics import TopicNames
from c2bus.core.labels import Classification
from tests.integration.corpus import TOPIC_ROLE, Corpus, Viewer, random_viewer
from tests.integration.services import Console, Env, event_id, gateway, publish_reference_policy
from tests.integration.test_roundtrip import read_all


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("C2BUS_TEST_SEED") or time.time_ns() % 1_000_000)
    print(f"C2BUS_TEST_SEED={seed}")
    return random.Random(seed)


def token(env: Env, viewer: Viewer) -> str:
    return env.token(
        unit=viewer.unit, nation=viewer.nation, clearance=Classification(viewer.clearance)
    )


#: The streams the gateway delivers only signed (by the enforcer; lifecycle steps by it or
#: a gateway): this test plays the enforcer.
SIGNED = {"directives": APPROVED, "decisions": DECISIONS, "status": STATUS}


async def publish(env: Env, topics: TopicNames, corpus: Corpus, start: int = 0) -> None:
    producer = AIOKafkaProducer(**client_options(env.kafka), acks="all", linger_ms=5)
    signer = env.signing.signer("enforcer")
    await producer.start()
    try:
        for stream, key, event in corpus.events[start:]:
            topic = getattr(topics, TOPIC_ROLE[stream])
            value = orjson.dumps(event)
            family = SIGNED.get(stream)
            headers = signer.headers(family, value) if family else None
            await producer.send(topic, value, key=key.encode(), headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def console(port: int, env: Env, viewer: Viewer, **extra: Any) -> Any:
    async with Console.connect(
        port, token(env, viewer), tuple(viewer.streams), **viewer.subscription(), **extra
    ) as c:
        yield c


async def test_no_path_delivers_what_policy_forbids_or_misses_what_it_allows(
    env: Env, topics: TopicNames, rng: random.Random
) -> None:
    await publish_reference_policy(env)  # the command structure behind unit subtrees
    corpus = Corpus(rng)
    corpus.add(400)
    viewers = [random_viewer(rng) for _ in range(40)]
    async with gateway(env) as gw:
        # Live: consoles connected before the events are published.
        async with contextlib.AsyncExitStack() as stack:
            live = [
                await stack.enter_async_context(console(gw.port, env, v, snapshot=False))
                for v in viewers[:12]
            ]
            await publish(env, topics, corpus)
            for viewer, c in zip(viewers[:12], live, strict=True):
                await c.events_with(corpus.visible(viewer))
                await c.drain()  # anything forbidden or repeated would have come by now
                got = [event_id(f) for f in c.frames]
                assert sorted(got) == sorted(corpus.visible(viewer)), viewer

        for viewer in viewers:
            # Snapshot: each SA entity's latest state, where the console may see it.
            async with console(gw.port, env, viewer) as c:
                assert sorted(event_id(f) for f in c.states) == sorted(
                    corpus.snapshot(viewer) if "sa" in viewer.streams else set()
                ), viewer
                origin = {k: -1 for k in c.positions}  # every partition of its streams
            # Resume from the very beginning: the whole history, filtered.
            async with console(gw.port, env, viewer, positions=origin) as c:
                got = [event_id(f) for f in c.frames]  # complete once it is live
                assert sorted(got) == sorted(corpus.visible(viewer)), viewer
        # No console was a directive's target, so the topics held the corpus alone.
        status = await read_all(env.kafka, topics.status)
        assert len(status) == sum(1 for stream, _, _ in corpus.events if stream == "status")
        assert gw.registry.get_sample_value("c2bus_gateway_conflated_total") == 0


async def test_random_disconnects_during_10000_events_leave_no_gap_and_no_duplicate(
    env: Env, topics: TopicNames, rng: random.Random
) -> None:
    await publish_reference_policy(env)
    corpus = Corpus(rng)
    corpus.add(10_000, entities=500, sa_share=0.8)
    viewers = [random_viewer(rng) for _ in range(5)]
    for viewer in viewers[:2]:  # and two that see nearly everything
        viewer.streams, viewer.types, viewer.area, viewer.units = (
            ["sa", "directives", "decisions", "status"],
            None,
            None,
            None,
        )
        viewer.clearance, viewer.nation, viewer.unit = "COSMIC TOP SECRET", "DEU", "SHAPE"
    received: dict[int, list[str]] = {i: [] for i in range(len(viewers))}
    reconnects = dict.fromkeys(received, 0)
    published = asyncio.Event()

    async def follow(index: int, viewer: Viewer, port: int) -> None:
        """Read, drop the link at a random moment (in a replay too), reconnect with the
        positions, until every expected event has arrived; then linger for stragglers."""
        expected = corpus.visible(viewer)
        got = received[index]
        seen: set[str] = set()
        positions: dict[str, int] | None = None
        while True:
            extra = {} if positions is None else {"positions": positions}
            async with console(port, env, viewer, snapshot=False, wait_live=False, **extra) as c:
                window = time.monotonic() + rng.uniform(0.2, 1.5)
                done = False
                checked = 0
                while not done and time.monotonic() < window:
                    with contextlib.suppress(TimeoutError):
                        await c.recv(timeout_s=0.1)
                    seen.update(event_id(f) for f in c.frames[checked:])
                    checked = len(c.frames)
                    done = published.is_set() and expected <= seen
                if done:
                    await c.drain(1.0)
                    got += [event_id(f) for f in c.frames]
                    return
                got += [event_id(f) for f in c.frames]
                positions = dict(c.positions)
                c.ws.transport.abort()  # the link drops: no close handshake
            reconnects[index] += 1

    async with gateway(env, C2BUS_GATEWAY_BUFFER_BYTES=str(16 << 20)) as gw:
        followers = [asyncio.create_task(follow(i, v, gw.port)) for i, v in enumerate(viewers)]
        await asyncio.sleep(0.5)
        for start in range(0, len(corpus.events), 1000):  # about 2,000 events per second
            chunk = Corpus(rng, corpus.events[start : start + 1000])
            await publish(env, topics, chunk)
            await asyncio.sleep(0.3)
        published.set()
        async with asyncio.timeout(240):
            await asyncio.gather(*followers)
        await asyncio.sleep(0.5)
        assert gw.registry.get_sample_value("c2bus_gateway_conflated_total") == 0
    for index, viewer in enumerate(viewers):
        expected = corpus.visible(viewer)
        got = received[index]
        gaps = expected - set(got)
        duplicates = len(got) - len(set(got))
        forbidden = set(got) - expected
        print(
            f"console {index}: {len(expected)} expected, {len(got)} received, "
            f"{reconnects[index]} reconnects, {len(gaps)} gaps, {duplicates} duplicates"
        )
        assert (len(gaps), duplicates, len(forbidden)) == (0, 0, 0), viewer
        assert reconnects[index] >= 3
