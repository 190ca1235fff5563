"""An outbox's signals as asyncio events: its session's writer waits for something to send,
a resume's replay waits until the console has drained what it was given."""

from __future__ import annotations

import asyncio

from c2bus.services.gateway.routing import Outbox, Signals


class ConsoleSignals(Signals):
    def __init__(self) -> None:
        self.woken = asyncio.Event()
        self.below_half = asyncio.Event()
        self.below_half.set()

    def wake(self) -> None:
        self.woken.set()

    def drained(self, drained: bool) -> None:
        if drained:
            self.below_half.set()
        else:
            self.below_half.clear()


def signals_of(outbox: Outbox) -> ConsoleSignals:
    signals = outbox.signals
    assert isinstance(signals, ConsoleSignals), "a console's outbox has asyncio signals"
    return signals
