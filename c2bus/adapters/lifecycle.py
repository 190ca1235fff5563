"""Running a service: signals set a stop event; the service's ``run`` does the ordered stop.

A service's ``run(stop)`` owns one ``asyncio.TaskGroup`` with its long-lived tasks; when
``stop`` is set it stops intake, drains, flushes, commits and closes, each step bounded.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from c2bus.adapters import logging as c2log
from c2bus.adapters.settings import ServiceSettings
from c2bus.errors import C2BusError

log = logging.getLogger(__name__)

Main = Callable[[ServiceSettings, asyncio.Event], Awaitable[None]]


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM and SIGINT set, in the running loop: how every service and
    tool learns to stop (its ``run`` then does the ordered stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_service(service: str, main: Main) -> int:
    """Entry point of ``python -m c2bus.services.<name>``: JSON logs, signals, exit status."""
    try:
        settings = ServiceSettings.from_env(service)
    except C2BusError as exc:
        sys.stderr.write(f"c2bus {service}: error: {exc}\n")
        return 1
    c2log.configure(service, settings.log_level)

    async def runner() -> None:
        await main(settings, stop_on_signals())

    try:
        asyncio.run(runner())
    except C2BusError as exc:
        log.error("service.failed", extra={"error": str(exc)})
        sys.stderr.write(f"c2bus {service}: error: {exc}\n")
        return 1
    log.info("service.stopped")
    return 0


async def bounded(step: str, awaitable: Awaitable[object], timeout_s: float) -> None:
    """One shutdown step, given at most ``timeout_s``; a step that overruns is cancelled and
    logged, one that fails raises its error.

    A cancellation of the caller meanwhile (a session's task group aborting a replay that is
    already stopping its consumer, a second signal) does not cut the step short: the step
    still runs to its end or its deadline, and then the cancellation goes on. A client's
    stop cut half way leaves its broker connections open."""
    work = asyncio.ensure_future(awaitable)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    cancelled = False
    while not work.done() and (remaining := deadline - loop.time()) > 0:
        try:
            await asyncio.wait([work], timeout=remaining)
        except asyncio.CancelledError:
            cancelled = True
    if not work.done():
        log.warning("shutdown.step_timed_out", extra={"step": step, "timeout_s": timeout_s})
        work.cancel()
        try:
            await asyncio.wait([work])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not work.cancelled():
            work.exception()  # seen: the cancellation is what goes on
        raise asyncio.CancelledError
    if not work.cancelled():
        work.result()
