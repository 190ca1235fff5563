"""Gateway fan-out against a bare ``websockets.broadcast()`` server, and memory per idle
console connection.

    .venv/bin/python -m loadtests.gateway_fanout [--clients 100,1000] [--rounds 2]
                                                 [--idle 5000] [--size 1024]

Fan-out: N WebSocket clients (in a process of their own, reading with a minimal frame
counter so that the clients cost as little as possible) receive M messages of about 1 KiB
each. The gateway side is the real live path: each message is a SA event record decoded
once, framed once, checked against every console's clearance, nation and subscription
(all N entitled), queued in its outbox and written by its writer. The events are unit
status reports of distinct units, so nothing is conflated. The baseline is a bare
``websockets`` server calling ``broadcast()`` with a string of the same size for each
message. Both run in this process, with the same keepalive settings and no compression;
rounds alternate and the best of each is compared. Figure: deliveries per second (N x M
over the time from the first message to the last client having all of them). Goal: the
gateway at >= 100 % of the bare broadcast.

Memory: a fresh process serves N idle consoles (connected, authenticated, subscribed to
every stream), and its resident memory before and after is divided by N; the same for the
bare server, whose connections are only open. Goal: <= 50 KB per idle console.

No Kafka is involved: this measures the fan-out alone (the end-to-end figures are the
harness's other scenarios).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from websockets.asyncio.server import ServerConnection, broadcast, serve

from c2bus.adapters.auth import TokenVerifier, mint
from c2bus.adapters.dlq import DeadLetters
from c2bus.adapters.settings import GatewaySettings, ServiceSettings
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.core.protocol import SUBPROTOCOL
from c2bus.services.gateway.app import Gateway

from .core import Bench, Result
from .wsframes import CLOSE, PING, PONG, masked, split_frames

AUDIENCE, ISSUER = "c2bus", "c2bus-bench"
HEARTBEAT_S = GatewaySettings.from_env({}).heartbeat_s
KEY = b"bench-key-" + b"k" * 40
BATCH = 200  # messages routed between yields, as the gateway's consumer loop does
CONTROL_FRAMES = {"gateway": 3, "bare": 0}  # welcome, subscribed, live


def say(message: str) -> None:
    print(f"[gateway_fanout {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


# --- servers -------------------------------------------------------------------------------


class GatewayServer:
    """The real gateway session machinery on a port, fed records directly."""

    def __init__(self) -> None:
        env = {
            "C2BUS_GATEWAY_PORT": "0",
            "C2BUS_GATEWAY_OPS_PORT": "0",
            "C2BUS_INSTANCE": "bench",
            "C2BUS_LOG_LEVEL": "WARNING",
        }
        settings = ServiceSettings.from_env("gateway", env)
        self.gateway = Gateway(settings, TokenVerifier(KEY, AUDIENCE, ISSUER))
        # Every record the benchmark routes is valid: nothing is dead-lettered.
        self.dlq = DeadLetters(None, "unused", "bench", CollectorRegistry())
        self.offset = 0

    async def start(self) -> int:
        self.server = await self.gateway.serve()
        self.gateway.ready = True
        return self.gateway.port

    def token(self) -> str:
        identity = Identity(
            "bench", "DEU", Classification.NATO_SECRET, "JFC-BRUNSSUM", frozenset({"console"})
        )
        return mint(KEY, identity, audience=AUDIENCE, issuer=ISSUER, ttl_s=3600)

    async def send(self, messages: list[bytes]) -> None:
        gateway = self.gateway
        topic = gateway.topics.sa
        for start in range(0, len(messages), BATCH):
            for value in messages[start : start + BATCH]:
                record = SimpleNamespace(
                    topic=topic, partition=0, offset=self.offset, value=value, key=None
                )
                self.offset += 1
                await gateway.intake.route(record, self.dlq)
            await asyncio.sleep(0)

    async def connected(self, n: int) -> None:
        """Until ``n`` consoles have subscribed (the clients saw their replies already)."""
        while sum(s.scope is not None for s in self.gateway.hub.sessions) < n:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


class BareServer:
    """A plain websockets server that broadcasts each message to every connection."""

    def __init__(self) -> None:
        self.connections: set[ServerConnection] = set()

    async def _handler(self, connection: ServerConnection) -> None:
        self.connections.add(connection)
        try:
            await connection.wait_closed()
        finally:
            self.connections.discard(connection)

    async def start(self) -> int:
        self.server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            compression=None,
            # the library's keepalive, as often as the gateway's own heartbeat pings
            ping_interval=HEARTBEAT_S,
            ping_timeout=HEARTBEAT_S,
            backlog=1024,
        )
        return int(next(iter(self.server.sockets)).getsockname()[1])

    def token(self) -> str:
        return ""

    async def connected(self, n: int) -> None:
        """Until ``n`` handshakes have completed on this side too."""
        while len(self.connections) < n:  # noqa: ASYNC110 (a count kept by the handlers)
            await asyncio.sleep(0.01)

    async def send(self, messages: list[bytes]) -> None:
        for start in range(0, len(messages), BATCH):
            for value in messages[start : start + BATCH]:
                broadcast(self.connections, value.decode())
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def sa_messages(count: int, size: int) -> list[bytes]:
    """``count`` SA unit-status events of about ``size`` bytes each (distinct units)."""
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(count):
        doc: dict[str, Any] = {
            "specversion": "1.0",
            "id": f"bench-{i}",
            "source": "urn:bench",
            "type": "c2bus.sa.unit-status.v1",
            "time": now,
            "classification": "NATO RESTRICTED",
            "releasableto": "NATO",
            "data": {"unit_id": f"U{i}", "readiness": "FULLY_OPERATIONAL", "remarks": ""},
        }
        doc["data"]["remarks"] = "x" * max(0, size - len(orjson.dumps(doc)))
        out.append(orjson.dumps(doc))
    return out


# --- clients (a process of their own) ------------------------------------------------------


async def _client(port: int, token: str, subscribe: bool) -> tuple[Any, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if token:
        lines += [f"Authorization: Bearer {token}", f"Sec-WebSocket-Protocol: {SUBPROTOCOL}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in response.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"handshake refused: {response[:200]!r}")
    if subscribe:
        request = {"op": "subscribe", "streams": ["sa", "directives", "decisions", "status"]}
        writer.write(masked(json.dumps({**request, "snapshot": False}).encode()))
    return reader, writer


async def _count(reader: Any, writer: Any, counts: list[int], index: int) -> None:
    """Count data frames (answering pings) until the connection ends."""
    buf = b""
    while True:
        chunk = await reader.read(262144)
        if not chunk:
            return
        frames, buf = split_frames(buf + chunk)
        for first, payload in frames:
            opcode = first & 0x0F
            if opcode in (0x1, 0x2):
                counts[index] += 1
            elif opcode == PING:
                writer.write(masked(payload, PONG))
            elif opcode == CLOSE:  # the server closes: answer, as a client must
                writer.write(masked(payload, CLOSE))
                writer.close()
                return


async def clients_main(port: int, n: int, token: str, control: int, messages: int) -> None:
    """Connect ``n`` clients; print ``ready`` once each has its control frames, ``done``
    once each has ``messages`` more; hold the connections until stdin closes."""
    raise_fd_limit(n + 100)
    # Whenever stdin closes (the benchmark is done with us, or gone), so are we.
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stdin_closed.add_done_callback(lambda _: os._exit(0))
    counts = [0] * n
    conns: list[tuple[Any, Any]] = []
    for start in range(0, n, 200):  # within the listen backlog
        batch = range(start, min(n, start + 200))
        conns += await asyncio.gather(*(_client(port, token, bool(token)) for _ in batch))
    readers = [asyncio.create_task(_count(r, w, counts, i)) for i, (r, w) in enumerate(conns)]
    while min(counts) < control:  # noqa: ASYNC110 (polling counters, no event to wait on)
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    while min(counts) < control + messages:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    print("done", flush=True)
    await stdin_closed
    for task in readers:
        task.cancel()


# --- runs ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def client_process(port: int, n: int, token: str, control: int, messages: int) -> Any:
    command = [sys.executable, "-m", "loadtests.gateway_fanout", "--as-clients"]
    command += [str(port), str(n), token or "-", str(control), str(messages)]
    process = await asyncio.create_subprocess_exec(
        *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 300)
        if line.strip() != b"ready":
            raise RuntimeError(f"the clients did not connect ({line!r})")
        yield process
    finally:
        process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(process.wait(), 10)
        if process.returncode is None:
            process.kill()


async def fanout(mode: str, n: int, messages: list[bytes]) -> float:
    server: GatewayServer | BareServer = GatewayServer() if mode == "gateway" else BareServer()
    port = await server.start()
    try:
        async with client_process(
            port, n, server.token(), CONTROL_FRAMES[mode], len(messages)
        ) as clients:
            assert clients.stdout is not None
            await asyncio.wait_for(server.connected(n), 60)
            started = time.perf_counter()
            await server.send(messages)
            line = await asyncio.wait_for(clients.stdout.readline(), 600)
            elapsed = time.perf_counter() - started
            if line.strip() != b"done":
                raise RuntimeError(f"the clients stopped early ({line!r})")
    finally:
        await server.stop()
    return n * len(messages) / elapsed


async def idle_memory(mode: str, n: int) -> float:
    """KB of resident memory per idle connection (run in a fresh process)."""
    raise_fd_limit(n + 100)
    server: GatewayServer | BareServer = GatewayServer() if mode == "gateway" else BareServer()
    port = await server.start()
    gc.collect()
    before = rss_kb()
    async with client_process(port, n, server.token(), CONTROL_FRAMES[mode], 0):
        await asyncio.wait_for(server.connected(n), 120)
        await asyncio.sleep(1.0)
        gc.collect()
        after = rss_kb()
    await server.stop()
    return (after - before) / n


def measure_memory(mode: str, n: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "loadtests.gateway_fanout", "--memory-of", mode, str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


async def fanout_table(
    clients: list[int], rounds: int, size: int
) -> list[tuple[int, float, float]]:
    rows = []
    for n in clients:
        messages = sa_messages(max(200, 200_000 // n), size)
        best = {"gateway": 0.0, "bare": 0.0}
        for r in range(rounds):
            for mode in ("gateway", "bare") if r % 2 == 0 else ("bare", "gateway"):
                rate = await fanout(mode, n, messages)
                say(f"{n} clients, {len(messages)} messages, {mode}: {rate:,.0f} deliveries/s")
                best[mode] = max(best[mode], rate)
        rows.append((n, best["gateway"], best["bare"]))
    return rows


def scenario(bench: Bench) -> list[Result]:
    clients, rounds, idle = ([100, 1000], 1, 1000) if bench.quick else ([100, 1000], 2, 5000)
    size = 1024
    rows = asyncio.run(fanout_table(clients, rounds, size))
    bench.say(f"memory: {idle} idle connections, each server in a fresh process")
    memory = {mode: measure_memory(mode, idle) for mode in ("gateway", "bare")}
    results = []
    for n, ours, bare in rows:
        ratio = ours / bare
        results.append(
            Result(
                scenario=f"fan-out with authorisation, N = {n:,}, 1 KiB",
                ours=f"{ours:,.0f} deliveries/s",
                baseline=f"websockets broadcast() {bare:,.0f}/s",
                ratio=ratio,
                ratio_label="x broadcast()",
                goal=">= 1.0 x",
                met=ratio >= 1.0,
                figures={"gateway_per_s": ours, "broadcast_per_s": bare, "clients": n},
                detail=f"best of {rounds} alternating rounds; every message authorised per "
                "console by the gateway; clients in a separate process",
            )
        )
    results.append(
        Result(
            scenario=f"gateway memory, {idle:,} idle consoles",
            ours=f"{memory['gateway']:.1f} KB/connection",
            baseline=f"bare websockets {memory['bare']:.1f} KB",
            ratio=None,
            ratio_label="",
            goal="<= 50 KB",
            met=memory["gateway"] <= 50,
            figures={"gateway_kb": memory["gateway"], "bare_kb": memory["bare"], "idle": idle},
            detail="change in resident memory per connection, each server in a fresh process",
        )
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="100,1000", help="client counts (100,1000)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (2)")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections (5000)")
    parser.add_argument("--size", type=int, default=1024, help="message bytes (1024)")
    parser.add_argument("--as-clients", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--memory-of", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_clients:
        port, n, bearer, control, messages = args.as_clients
        asyncio.run(
            clients_main(
                int(port), int(n), "" if bearer == "-" else bearer, int(control), int(messages)
            )
        )
        return 0
    if args.memory_of:
        print(asyncio.run(idle_memory(args.memory_of[0], int(args.memory_of[1]))))
        return 0

    clients = [int(c) for c in args.clients.split(",") if c]
    rows = asyncio.run(fanout_table(clients, args.rounds, args.size))
    say(f"memory: {args.idle} idle connections, each server in a fresh process")
    memory = {mode: measure_memory(mode, args.idle) for mode in ("gateway", "bare")}
    print()
    print(f"fan-out, {args.size}-byte messages, best of {args.rounds} (deliveries/s):")
    print(f"{'clients':>8} {'gateway':>12} {'broadcast()':>12} {'ratio':>7}  goal >= 1.00")
    for n, ours, bare in rows:
        print(f"{n:>8} {ours:>12,.0f} {bare:>12,.0f} {ours / bare:>7.2f}")
    print(
        f"memory per idle connection at {args.idle}: gateway console {memory['gateway']:.1f} KB"
        f" (goal <= 50), bare websockets connection {memory['bare']:.1f} KB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
