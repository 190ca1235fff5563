"""CPU-bound work off the event loop: a process of its own, each call within a time limit.

A service that must take arbitrary documents from callers (the policy API: validate,
compile, dry-run and shadow-run what a caller posts) does that work here, so that its event
loop keeps answering everyone else, and so that a document that would take minutes is
stopped at the limit: the worker process is killed and a fresh one started for the next
call. ``fn`` and its arguments cross the process boundary by pickle: ``fn`` must be a
module-level function, and what it raises should be a plain exception (or be turned into a
result by ``fn``). The worker is a fresh interpreter that imports the main module again, so
every entry point runs its service under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.pool
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Overrun(Exception):
    """A call that did not finish within the limit (it was stopped)."""


def _ready() -> bool:
    return True


class Worker:
    """One worker process, started on first use (or by :meth:`start`); calls queue for it
    and each must finish within ``time_limit_s`` of being made."""

    def __init__(self, name: str, time_limit_s: float) -> None:
        self.name = name
        self.time_limit_s = time_limit_s
        self._pool: multiprocessing.pool.Pool | None = None
        #: the calls waiting on the current pool (failed at once if it is killed)
        self._waiting: set[asyncio.Future[Any]] = set()

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start the process now and wait until it answers (it imports what ``fn`` needs
        on its first call; starting here keeps that out of the first caller's limit)."""
        await self.run(_ready, limit_s=timeout_s)

    async def run(self, fn: Callable[..., T], *args: Any, limit_s: float | None = None) -> T:
        """``fn(*args)`` in the worker process; :class:`Overrun` if it takes longer than
        the limit (counted from this call, so time waiting behind another call counts)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(result)
            else:
                done.set_exception(error)

        pool = self._started()
        self._waiting.add(done)
        pool.apply_async(
            fn,
            args,
            callback=lambda result: loop.call_soon_threadsafe(settle, result, None),
            error_callback=lambda error: loop.call_soon_threadsafe(settle, None, error),
        )
        limit = self.time_limit_s if limit_s is None else limit_s
        try:
            async with asyncio.timeout(limit):
                return await done
        except TimeoutError:
            log.warning("worker.overrun", extra={"worker": self.name, "limit_s": limit})
            await self._kill(pool)
            raise Overrun(f"took longer than {limit:g}s") from None
        finally:
            self._waiting.discard(done)

    async def close(self) -> None:
        if self._pool is not None:
            await self._kill(self._pool)

    def _started(self) -> multiprocessing.pool.Pool:
        if self._pool is None:
            # spawn: a fresh interpreter, nothing of this process's threads, sockets or loop
            self._pool = multiprocessing.get_context("spawn").Pool(1)
        return self._pool

    async def _kill(self, pool: multiprocessing.pool.Pool) -> None:
        if self._pool is not pool:
            return  # already killed by another call that overran
        self._pool = None
        waiting, self._waiting = self._waiting, set()
        for other in waiting:
            if not other.done():
                other.set_exception(Overrun("stopped with a call before it that overran"))
        await asyncio.to_thread(pool.terminate)
