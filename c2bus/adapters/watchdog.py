"""A supervisor for a long-running pipeline: restart it when it fails or stops making progress.

The pipeline beats a :class:`Heartbeat` each time it completes a unit of work (or finds
none to do). If no beat arrives for ``stall_s`` the pipeline is cancelled and started again;
if it raises, it is started again after a backoff. Every restart is logged and counted by
reason, so a wedged client turns into a visible, bounded event instead of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()

    def beat(self) -> None:
        self.last = self.clock()

    def age(self) -> float:
        return self.clock() - self.last


Pipeline = Callable[[Heartbeat], Awaitable[None]]


async def supervise(
    name: str,
    pipeline: Pipeline,
    stop: asyncio.Event,
    *,
    stall_s: float,
    restarts: Counter,
    cancel_timeout_s: float = 30.0,
    max_backoff_s: float = 10.0,
) -> None:
    """Run ``pipeline`` until ``stop`` is set, restarting it on failure or stall.

    A pipeline that returns while ``stop`` is not set counts as a failure too: it is
    supposed to run until told to stop.
    """
    failures = 0
    while not stop.is_set():
        beat = Heartbeat()
        started = time.monotonic()
        task = asyncio.ensure_future(pipeline(beat))
        stalled = False
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=min(1.0, stall_s / 4))
                if not task.done() and beat.age() > stall_s:
                    stalled = True
                    log.error(f"{name}.stalled", extra={"silent_s": round(beat.age(), 1)})
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        async with asyncio.timeout(cancel_timeout_s):
                            await asyncio.wait({task})
                    break
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        if stop.is_set():
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning(
                    f"{name}.failed_while_stopping", extra={"error": repr(task.exception())}
                )
            return
        if stalled:
            reason = "stalled"
        elif task.cancelled():
            reason = "cancelled"
        elif task.exception() is not None:
            reason = "error"
            log.error(f"{name}.failed", extra={"error": repr(task.exception())[:1000]})
        else:
            reason = "exited"
        # a pipeline that ran for a while before failing starts the backoff afresh
        failures = 1 if time.monotonic() - started > stall_s else failures + 1
        restarts.labels(reason).inc()
        backoff = min(0.5 * 2 ** (failures - 1), max_backoff_s)
        log.warning(f"{name}.restarting", extra={"reason": reason, "backoff_s": backoff})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(backoff):
                await stop.wait()
