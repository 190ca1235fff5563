"""The gateway's writer uses websockets internals (the connection's sans-I/O protocol, its
transport, its flow-control flag and drain). This fails loudly on a websockets version the
writer was not tested with, and proves the path it takes on a real socket."""

from __future__ import annotations

import asyncio
import inspect

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from c2bus.services.gateway.sessions import WEBSOCKETS_MAJOR


def test_websockets_is_the_major_version_the_writer_was_tested_with() -> None:
    major = int(websockets.__version__.split(".")[0])
    assert major == WEBSOCKETS_MAJOR, (
        f"websockets {websockets.__version__} is installed; the gateway's writer uses its "
        f"internals and was tested with {WEBSOCKETS_MAJOR}.x: check sessions.Sessions._send "
        "against the new version, then change WEBSOCKETS_MAJOR and the pin in pyproject.toml"
    )


async def test_frames_written_through_the_protocol_and_transport_arrive() -> None:
    seen: dict[str, object] = {}

    async def handler(connection: ServerConnection) -> None:
        protocol, transport = connection.protocol, connection.transport
        seen["paused"] = connection.paused
        seen["drain"] = inspect.iscoroutinefunction(connection.drain)
        for text in ("one", "two"):
            protocol.send_text(text.encode())
        transport.write(b"".join(protocol.data_to_send()))
        await connection.drain()
        await connection.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with asyncio.timeout(10), connect(f"ws://127.0.0.1:{port}") as client:
            assert [await client.recv(), await client.recv()] == ["one", "two"]
    assert seen == {"paused": False, "drain": True}
