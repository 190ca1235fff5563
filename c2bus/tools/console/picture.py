"""The console's picture of the world, built from gateway frames (no I/O, no rendering)."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Picture:
    tracks: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)
    directives: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    decisions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    counts: Counter[str] = field(default_factory=Counter)
    identity: dict[str, Any] = field(default_factory=dict)
    status: str = "connecting"
    started: float = field(default_factory=time.monotonic)
    #: Per partition, the last offset received: what the console resumes from.
    positions: dict[str, int] = field(default_factory=dict)

    def _advance(self, positions: dict[str, int]) -> None:
        for key, offset in positions.items():
            if offset > self.positions.get(key, -1):
                self.positions[key] = offset

    def apply(self, message: dict[str, Any]) -> str | None:
        """Fold one server frame into the picture; returns a one-line summary of it."""
        op = message.get("op")
        if op == "welcome":
            self.identity = message.get("identity", {})
            self.status = "connected"
            ident = self.identity
            return (
                f"CONNECTED as {ident.get('sub')} ({ident.get('unit')}, {ident.get('nation')}, "
                f"{ident.get('clearance')})"
            )
        if op == "subscribed":
            self._advance(message.get("positions", {}))
            mode = message.get("mode", "")
            return f"SUBSCRIBED {','.join(message.get('streams', []))} ({mode})"
        if op == "snapshot_end":
            self._advance(message.get("positions", {}))
            return f"SNAPSHOT {message.get('count', 0)} entities"
        if op == "resync":
            return f"RESYNC {','.join(message.get('partitions', []))}: {message.get('reason')}"
        if op == "live":
            self.status = "live"
            return "LIVE"
        if op == "error":
            return f"ERROR {message.get('code')}: {message.get('message')}"
        if op == "state":
            message = {**message, "op": "event"}  # the snapshot's latest state of an entity
        elif op == "event":
            partition, _, offset = str(message.get("pos", "")).rpartition("/")
            if partition and offset.isdigit():
                self._advance({partition: int(offset)})
        else:
            return None
        stream = str(message.get("stream"))
        event = message.get("event", {})
        self.counts[stream] += 1
        data = event.get("data", {})
        label = f"[{event.get('classification')} // {event.get('releasableto')}]"
        if stream == "sa" and "track_id" in data:
            self.tracks[data["track_id"]] = event
            self.seen_at[data["track_id"]] = time.monotonic()
            pos = data.get("position", {})
            return (
                f"TRACK {data['track_id']} {data.get('identity', 'UNKNOWN')} "
                f"{data.get('domain', '')} "
                f"{pos.get('lat', 0):.4f},{pos.get('lon', 0):.4f} "
                f"{data.get('course_deg', 0):.0f}deg {data.get('speed_mps', 0):.0f}m/s {label}"
            )
        if stream == "sa":
            return f"SA {event.get('type')} {event.get('subject', '')} {label}"
        if stream == "directives":
            self.directives.appendleft(event)
            return (
                f"DIRECTIVE {event.get('id')} {data.get('kind')} {data.get('issuer')} -> "
                f"{data.get('target')} {label}"
            )
        if stream == "status":
            reason = f" ({data['reason']})" if data.get("reason") else ""
            return (
                f"STATUS {data.get('state')} {data.get('directive_id')} by {data.get('actor')}"
                + reason
            )
        if stream == "decisions":
            self.decisions.appendleft(event)
            reasons = "; ".join(f"{r['rule']}: {r['message']}" for r in data.get("reasons", []))
            return (
                f"DECISION {data.get('verdict')} {data.get('directive_id')} {data.get('kind')} "
                f"{data.get('issuer')} -> {data.get('target')}"
                + (f" ({reasons})" if reasons else "")
            )
        return None

    def rate(self) -> float:
        elapsed = max(time.monotonic() - self.started, 1e-3)
        return sum(self.counts.values()) / elapsed
