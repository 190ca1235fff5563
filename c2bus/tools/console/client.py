"""The console's connection loop: connect with a token, subscribe, fold frames, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable

import orjson
from rich.console import Console
from rich.live import Live
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from c2bus.core.protocol import SUBPROTOCOL
from c2bus.errors import C2BusError
from c2bus.tools.console.picture import Picture
from c2bus.tools.console.view import render


async def run_console(
    url: str,
    token: str,
    streams: list[str],
    *,
    plain: bool,
    count: int | None = None,
    duration_s: float | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Show the live picture until interrupted, ``count`` events, or ``duration_s``.

    Returns how many event frames arrived. Refused handshakes raise :class:`C2BusError`
    (a bad token does not get better by retrying); dropped connections are retried.
    """
    picture = Picture()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    live: Live | None = None
    if not plain:
        live = Live(render(picture, url), console=Console(), refresh_per_second=4, screen=False)
        live.start()
    backoff = 0.5
    try:
        while True:
            try:
                async with connect(
                    url,
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers={"Authorization": f"Bearer {token}"},
                    open_timeout=10,
                ) as ws:
                    backoff = 0.5
                    await ws.send(orjson.dumps(_subscription(streams, picture)).decode())
                    while True:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return sum(picture.counts.values())
                        try:
                            async with asyncio.timeout(remaining if remaining is not None else 1.0):
                                raw = await ws.recv()
                        except TimeoutError:
                            if live:
                                live.update(render(picture, url))
                            continue
                        line = picture.apply(orjson.loads(raw))
                        if plain and line:
                            out(line)
                        elif live:
                            live.update(render(picture, url))
                        if count is not None and sum(picture.counts.values()) >= count:
                            return sum(picture.counts.values())
            except InvalidStatus as exc:
                status = exc.response.status_code
                body = exc.response.body.decode(errors="replace").strip()
                raise C2BusError(f"the gateway refused the console ({status}): {body}") from exc
            except InvalidURI as exc:
                raise C2BusError(f"invalid gateway URL {url}: use ws://host:port") from exc
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                picture.status = f"reconnecting ({type(exc).__name__})"
                if plain:
                    sys.stderr.write(f"DISCONNECTED {exc}; retrying in {backoff:.1f}s\n")
                if deadline is not None and time.monotonic() >= deadline:
                    return sum(picture.counts.values())
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
    finally:
        if live:
            with contextlib.suppress(Exception):
                live.stop()


def _subscription(streams: list[str], picture: Picture) -> dict[str, object]:
    request: dict[str, object] = {"op": "subscribe", "id": "s1", "streams": streams}
    if picture.positions:  # a reconnect: resume where the picture stands
        request["positions"] = picture.positions
    return request
