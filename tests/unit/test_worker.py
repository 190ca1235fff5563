"""The worker process that takes CPU-bound work off a service's event loop: results and
errors come back, a call past its limit is stopped (the process killed, the calls queued
behind it refused at once) and the next call gets a fresh process."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from c2bus.adapters.worker import Overrun, Worker


def pid() -> int:
    return os.getpid()


def spin(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "done"


def fail(message: str) -> None:
    raise ValueError(message)


async def test_work_runs_in_another_process_and_an_overrun_is_stopped() -> None:
    worker = Worker("test", time_limit_s=1.0)
    try:
        await worker.start()
        first = await worker.run(pid)
        assert first != os.getpid()
        assert await worker.run(spin, 0.01) == "done"
        with pytest.raises(ValueError, match="bad input"):
            await worker.run(fail, "bad input")
        assert await worker.run(pid) == first  # an error does not cost the process

        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.create_task(tick())
        overrun = asyncio.create_task(worker.run(spin, 30))
        queued = asyncio.create_task(worker.run(spin, 0.01, limit_s=30))
        with pytest.raises(Overrun, match="longer than 1s"):
            await overrun
        with pytest.raises(Overrun, match="stopped with a call before it"):
            await queued  # refused at once, not left waiting out its own limit
        ticker.cancel()
        assert ticks >= 10  # the loop kept running while the work spun
        await worker.start()
        assert await worker.run(pid) not in (first, os.getpid())  # a fresh process
    finally:
        await worker.close()
