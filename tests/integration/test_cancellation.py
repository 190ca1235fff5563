"""Cancellation in the middle of an operation, then the state checked (the httpcore way):
an enforcer cancelled while a lane is committing loses and repeats no decision, and a
gateway whose ``run`` is cancelled closes its consoles and its port and leaves no task."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from websockets.exceptions import ConnectionClosed

from c2bus.adapters.topics import TopicNames
from c2bus.services.enforcer.lanes import Lane
from c2bus.services.gateway.app import Gateway
from tests.integration.services import (
    Console,
    Env,
    eventually,
    publish_reference_policy,
    running,
)
from tests.integration.test_exactly_once import decided, enforcer_named, submit


async def test_an_enforcer_cancelled_mid_commit_loses_and_repeats_nothing(
    env: Env, topics: TopicNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish_reference_policy(env)
    committing = asyncio.Event()
    real_commit: Callable[..., Awaitable[None]] = Lane.commit

    async def commit(lane: Lane, tp: TopicPartition, group_id: str, timeout_s: float) -> None:
        if lane.tally.verdicts:  # a transaction that decided something
            committing.set()
            await asyncio.sleep(0.05)  # cancelled here, or inside the real commit below
        await real_commit(lane, tp, group_id, timeout_s)

    monkeypatch.setattr(Lane, "commit", commit)
    first = enforcer_named(env, "enforcer-cancelled")
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    ids, _ = await submit(env, topics.submitted, 0, 200)
    async with asyncio.timeout(60):
        await committing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not first.ready
    assert first.pipeline is not None and not first.pipeline.lanes  # every lane closed

    monkeypatch.setattr(Lane, "commit", real_commit)
    second = enforcer_named(env, "enforcer-after")
    async with running(second, lambda: second.ready):
        per_directive = await decided(env, topics, len(ids))
    assert set(per_directive) == set(ids)
    assert all(n == 1 for n in per_directive.values()), per_directive.most_common(3)


async def test_a_gateway_cancelled_while_serving_closes_everything(env: Env) -> None:
    service = Gateway(env.settings("gateway"), env.verifier())
    before = asyncio.all_tasks()
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await eventually(lambda: service.ready, timeout_s=30)
    console_cm = Console.connect(service.port, env.token(unit="MNC-NE"), ("sa",))
    console = await console_cm.__aenter__()
    try:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not service.ready
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await console.ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    finally:
        with contextlib.suppress(Exception):
            await console_cm.__aexit__(None, None, None)
    assert not service.hub.sessions
    with socket.socket() as probe:  # the port no longer accepts
        assert probe.connect_ex(("127.0.0.1", service.port)) != 0
    await asyncio.sleep(0.1)
    left: set[Any] = {t for t in asyncio.all_tasks() - before if not t.done()}
    left.discard(asyncio.current_task())
    assert not left, [t.get_coro() for t in left]
