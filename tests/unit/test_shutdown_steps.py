"""A shutdown step runs to its end or to its deadline, whatever cancels its caller meanwhile:
a client's stop cut half way (a session's task group aborting a replay that is already
stopping its consumer) leaves its broker connections open."""

from __future__ import annotations

import asyncio
import logging

import pytest

from c2bus.adapters.lifecycle import bounded


class Step:
    """A stop that takes ``takes_s`` and records whether it got to its end."""

    def __init__(self, takes_s: float) -> None:
        self.takes_s = takes_s
        self.finished = False

    async def run(self) -> None:
        await asyncio.sleep(self.takes_s)
        self.finished = True


async def test_a_step_finishes_and_returns() -> None:
    step = Step(0.01)
    await bounded("step", step.run(), 1)
    assert step.finished


async def test_a_cancelled_caller_waits_for_its_step_then_is_cancelled() -> None:
    step = Step(0.2)
    caller = asyncio.create_task(bounded("step", step.run(), 5))
    await asyncio.sleep(0.05)
    caller.cancel()
    await asyncio.sleep(0.05)
    caller.cancel()  # a second time: a task group aborting after the first
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert step.finished


async def test_a_cancelled_caller_still_gives_up_at_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    step = Step(30)
    caller = asyncio.create_task(bounded("slow.stop", step.run(), 0.2))
    await asyncio.sleep(0.05)
    caller.cancel()
    with caplog.at_level(logging.WARNING), pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await caller
    assert not step.finished
    assert [r.msg for r in caplog.records] == ["shutdown.step_timed_out"]


async def test_a_step_that_overruns_is_abandoned_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    step = Step(30)
    with caplog.at_level(logging.WARNING):
        async with asyncio.timeout(5):
            await bounded("slow.stop", step.run(), 0.1)
    assert not step.finished
    assert caplog.records[0].__dict__["step"] == "slow.stop"


async def test_a_step_that_fails_raises_its_error() -> None:
    async def broken() -> None:
        raise RuntimeError("broker said no")

    with pytest.raises(RuntimeError, match="broker said no"):
        await bounded("step", broken(), 1)


async def test_a_cancelled_caller_whose_step_fails_is_still_cancelled() -> None:
    async def broken_later() -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("broker said no")

    caller = asyncio.create_task(bounded("step", broken_later(), 5))
    await asyncio.sleep(0.02)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
