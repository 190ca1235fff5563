"""The pipeline supervisor: a stalled or failed pipeline is restarted, counted, and logged."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter

from c2bus.adapters.watchdog import Heartbeat, supervise


def restarts_counter() -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry()
    return registry, Counter("restarts", "restarts", ["reason"], registry=registry)


def count(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("restarts_total", {"reason": reason}) or 0.0


async def test_a_pipeline_that_stops_beating_is_cancelled_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, restarts = restarts_counter()
    stop = asyncio.Event()
    runs: list[str] = []

    async def pipeline(beat: Heartbeat) -> None:
        runs.append("start")
        if len(runs) == 1:
            try:
                await asyncio.sleep(3600)  # wedged: never beats
            finally:
                runs.append("cancelled")
        while True:  # healthy: beats, until the test stops it
            beat.beat()
            if len(runs) >= 3:
                stop.set()
                return
            await asyncio.sleep(0.01)

    async with asyncio.timeout(20):
        await supervise("test.pipeline", pipeline, stop, stall_s=0.3, restarts=restarts)
    assert runs[:3] == ["start", "cancelled", "start"]
    assert count(registry, "stalled") == 1
    assert "test.pipeline.stalled" in caplog.text


async def test_a_failing_pipeline_is_restarted_with_backoff_and_counted() -> None:
    registry, restarts = restarts_counter()
    stop = asyncio.Event()
    attempts = 0

    async def pipeline(beat: Heartbeat) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("broker went away")
        stop.set()

    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(20):
        await supervise("test.pipeline", pipeline, stop, stall_s=30, restarts=restarts)
    assert attempts == 3
    assert count(registry, "error") == 2
    assert loop.time() - started >= 0.5 + 1.0  # 0.5 s, then 1 s of backoff


async def test_stop_ends_supervision_without_a_restart() -> None:
    registry, restarts = restarts_counter()
    stop = asyncio.Event()

    async def pipeline(beat: Heartbeat) -> None:
        while not stop.is_set():
            beat.beat()
            await asyncio.sleep(0.01)

    async def stop_soon() -> None:
        await asyncio.sleep(0.2)
        stop.set()

    async with asyncio.timeout(10), asyncio.TaskGroup() as tasks:
        tasks.create_task(stop_soon())
        tasks.create_task(supervise("p", pipeline, stop, stall_s=5, restarts=restarts))
    assert all(count(registry, r) == 0 for r in ("stalled", "error", "exited", "cancelled"))


async def test_a_pipeline_returning_on_its_own_counts_as_exited() -> None:
    registry, restarts = restarts_counter()
    stop = asyncio.Event()
    runs = 0

    async def pipeline(beat: Heartbeat) -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            stop.set()

    async with asyncio.timeout(10):
        await supervise("p", pipeline, stop, stall_s=5, restarts=restarts)
    assert count(registry, "exited") == 1
