"""Console processes for the end-to-end scenarios (``loadtests.e2e``): real c2bus.v1
WebSocket consoles, in a process of their own so that the measuring clients do not share
the gateway's (or the producer's) event loop.

    python -m loadtests.e2e_clients        (driven by loadtests.e2e over stdin/stdout)

The parent writes one JSON line on stdin: ``{"port", "max_seconds", "consoles": [{"token",
"subscribe"}, ...]}``. Every console connects (bearer token, subprotocol ``c2bus.v1``),
reads its welcome, sends its ``subscribe`` and waits for ``live``; then the process prints
``ready``. From then on each event frame is stamped with the wall-clock time at which its
bytes were read from the socket, and kept as (event id, time) per console. Commands, one
per line on stdin:

- ``count``: print how many event frames have arrived so far (to wait for the tail);
- ``report``: print one JSON line ``{"received": {event id: [[console, time], ...]},
  "closed": {console: close code}, "frames": n}`` with everything since the last report,
  and start afresh;
- ``stop``, or stdin closing: exit.

The process also exits by itself after ``max_seconds``. The WebSocket client is a minimal
one (handshake, masked client frames, pings answered, closes answered) so that reading
costs as little as possible; frames are parsed only as far as the event id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import sys
import time
from typing import Any

import orjson

from c2bus.core.protocol import SUBPROTOCOL

from .wsframes import CLOSE, PING, PONG, masked, split_frames

EVENT_HEAD = b'{"op":"event"'
EVENT_KEY = b',"event":'
ID_KEY = b'"id":"'
CONNECT_BATCH = 100  # handshakes in flight at once, within the gateway's listen backlog


def event_id(frame: bytes) -> str:
    """The CloudEvent id of an event frame (found without parsing the whole frame)."""
    start = frame.find(EVENT_KEY)
    at = frame.find(ID_KEY, start) if start >= 0 else -1
    if at >= 0:
        at += len(ID_KEY)
        end = frame.find(b'"', at)
        if end > at and b"\\" not in frame[at:end]:
            return frame[at:end].decode()
    return str(orjson.loads(frame)["event"]["id"])  # escapes or another layout


class ConsoleClient:
    """One console: its connection, the control frames it saw and its event receipts."""

    def __init__(self, index: int, port: int, token: str, subscribe: dict[str, Any]) -> None:
        self.index = index
        self.port = port
        self.token = token
        self.subscribe = subscribe
        self.receipts: list[tuple[str, float]] = []
        self.frames = 0
        self.live = asyncio.Event()
        self.closed: int | None = None  # the close code, once the gateway closed us
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            "GET / HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n"
        )
        writer.write(request.encode())
        response = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in response.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"console {self.index}: handshake refused: {response[:200]!r}")
        self.reader, self.writer = reader, writer

    def _control(self, message: bytes) -> None:
        doc = orjson.loads(message)
        op = doc.get("op")
        if op == "welcome":
            assert self.writer is not None
            self.writer.write(masked(orjson.dumps({"op": "subscribe", **self.subscribe})))
        elif op == "live":
            self.live.set()
        elif op == "error":
            raise RuntimeError(f"console {self.index}: the gateway refused: {doc}")

    async def read(self) -> None:
        """Read frames until the connection ends, stamping each chunk as it arrives."""
        reader, writer = self.reader, self.writer
        assert reader is not None and writer is not None
        buf = b""
        fragments: list[bytes] = []
        clock = time.time
        receipts = self.receipts
        while True:
            chunk = await reader.read(262144)
            if not chunk:
                if self.closed is None:
                    self.closed = 1006  # gone without a close frame
                return
            now = clock()
            frames, buf = split_frames(buf + chunk)
            for first, part in frames:
                opcode = first & 0x0F
                if opcode in (0x0, 0x1, 0x2):
                    if not first & 0x80:  # a fragment: wait for the rest
                        fragments.append(part)
                        continue
                    payload = b"".join([*fragments, part]) if fragments else part
                    fragments.clear()
                    if payload.startswith(EVENT_HEAD):
                        receipts.append((event_id(payload), now))
                        self.frames += 1
                    else:
                        self._control(payload)
                elif opcode == PING:
                    writer.write(masked(part, PONG))
                elif opcode == CLOSE:  # the gateway closes: answer, as a client must
                    self.closed = int.from_bytes(part[:2], "big") if len(part) >= 2 else 1005
                    writer.write(masked(part[:2], CLOSE))
                    writer.close()
                    return


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _say(line: bytes) -> None:
    sys.stdout.buffer.write(line + b"\n")
    sys.stdout.buffer.flush()


async def serve(stdin: asyncio.StreamReader, spec: dict[str, Any]) -> None:
    port = int(spec["port"])
    consoles = [
        ConsoleClient(i, port, c["token"], c["subscribe"]) for i, c in enumerate(spec["consoles"])
    ]
    for start in range(0, len(consoles), CONNECT_BATCH):
        await asyncio.gather(*(c.connect() for c in consoles[start : start + CONNECT_BATCH]))
    readers = [asyncio.create_task(c.read()) for c in consoles]
    try:
        live = asyncio.ensure_future(asyncio.gather(*(c.live.wait() for c in consoles)))
        done, _ = await asyncio.wait(
            [live, *readers], timeout=120, return_when=asyncio.FIRST_COMPLETED
        )
        if live not in done:
            live.cancel()
            for task in done:
                task.result()  # a console refused or failed: say why
            lost = [c.index for c in consoles if not c.live.is_set()]
            raise RuntimeError(f"consoles {lost[:10]} not live ({len(lost)} in all)")
        _say(b"ready")
        while line := (await stdin.readline()).strip():
            if line == b"count":
                _say(str(sum(c.frames for c in consoles)).encode())
            elif line == b"report":
                received: dict[str, list[tuple[int, float]]] = {}
                for c in consoles:
                    for ident, at in c.receipts:
                        received.setdefault(ident, []).append((c.index, at))
                    c.receipts.clear()  # the same list: its reader appends to it
                closed = {str(c.index): c.closed for c in consoles if c.closed is not None}
                frames = sum(c.frames for c in consoles)
                _say(orjson.dumps({"received": received, "closed": closed, "frames": frames}))
            elif line == b"stop":
                break
    finally:
        for task in readers:
            task.cancel()
        for c in consoles:
            if c.writer is not None:
                c.writer.close()


async def main() -> None:
    stdin = await _stdin_lines()
    spec = orjson.loads(await stdin.readline())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(spec["consoles"]) + 100
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(float(spec["max_seconds"])):  # stop by ourselves
            await serve(stdin, spec)


if __name__ == "__main__":
    asyncio.run(main())
