"""The bare WebSocket framing the benchmarks' console processes speak (RFC 6455): small
enough to cost the measuring side little, next to the gateway being measured."""

from __future__ import annotations

import os

PING, PONG, CLOSE = 0x9, 0xA, 0x8


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame (clients must mask what they send)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def split_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole (unmasked, server-sent) frames at the start of ``buf`` as (first byte,
    payload) pairs, and the bytes left over for the next read."""
    frames = []
    pos, end = 0, len(buf)
    while end - pos >= 2:
        n, head = buf[pos + 1] & 0x7F, 2
        if n == 126:
            if end - pos < 4:
                break
            n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            if end - pos < 10:
                break
            n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
        if end - pos < head + n:
            break
        frames.append((buf[pos], buf[pos + head : pos + head + n]))
        pos += head + n
    return frames, buf[pos:]
