"""Random events and random consoles, and an oracle that says what each console may receive.

The oracle is written from the rules as documented (docs/gateway-protocol.md), apart from
the gateway's code: the ranking of classifications, releasability by nation or NATO
membership, the area box, and the unit subtree read straight from the policy file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from c2bus.core.labels import NATO_MEMBERS
from tests.integration.services import REFERENCE_POLICY

LEVELS = [
    "NATO UNCLASSIFIED",
    "NATO RESTRICTED",
    "NATO CONFIDENTIAL",
    "NATO SECRET",
    "COSMIC TOP SECRET",
]
NATIONS = ["DEU", "POL", "LTU", "NLD", "USA", "AUS", "JPN"]
MARKINGS = ["NATO", *NATIONS]
_POLICY = yaml.safe_load(REFERENCE_POLICY.read_text())
PARENT: dict[str, str | None] = {u["id"]: u.get("parent") for u in _POLICY["units"]}
UNITS = sorted(PARENT)
#: Directives target units with none below them; consoles are of units with some below.
#: So no console is ever a target, and the gateway adds no DELIVERED steps of its own:
#: the topics hold exactly the corpus. (The lifecycle has its own test.)
TARGETS = sorted(set(UNITS) - {p for p in PARENT.values() if p})
COMMANDS = sorted(set(UNITS) - set(TARGETS))
STREAM_TYPES = {
    "sa": ["c2bus.sa.track.v1", "c2bus.sa.position.v1", "c2bus.sa.unit-status.v1"],
    "directives": ["c2bus.directive.v1"],
    "decisions": ["c2bus.decision.v1"],
    "status": ["c2bus.directive.status.v1"],
}
TOPIC_ROLE = {
    "sa": "sa",
    "directives": "approved",
    "decisions": "decisions",
    "status": "status",
}


def within(unit: str, root: str) -> bool:
    current: str | None = unit
    while current is not None:
        if current == root:
            return True
        current = PARENT.get(current)
    return False


@dataclass
class Viewer:
    """A console: who it is and what it subscribed to."""

    nation: str
    clearance: str
    unit: str
    streams: list[str]
    types: list[str] | None = None
    area: dict[str, float] | None = None
    units: str | None = None

    def subscription(self) -> dict[str, Any]:
        request: dict[str, Any] = {}
        if self.types is not None:
            request["types"] = self.types
        if self.area is not None:
            request["area"] = self.area
        if self.units is not None:
            request["units"] = self.units
        return request

    def may_see(self, stream: str, event: dict[str, Any]) -> bool:
        if stream not in self.streams:
            return False
        if LEVELS.index(event["classification"]) > LEVELS.index(self.clearance):
            return False
        marks = event["releasableto"].split(",")
        if self.nation not in marks and not ("NATO" in marks and self.nation in NATO_MEMBERS):
            return False
        if self.types is not None and event["type"] not in self.types:
            return False
        data = event["data"]
        root = self.units or self.unit
        if stream == "sa":
            if "position" in data and self.area is not None and not _in_box(self.area, data):
                return False
            if "unit_id" in data and self.units is not None:
                return within(data["unit_id"], root)
            return True
        if stream == "decisions" or (stream == "status" and data["state"] == "DECIDED"):
            return within(data["issuer"], root)
        return within(data["issuer"], root) or within(data["target"], root)


def _in_box(area: dict[str, float], data: dict[str, Any]) -> bool:
    lat, lon = data["position"]["lat"], data["position"]["lon"]
    return area["south"] <= lat <= area["north"] and area["west"] <= lon <= area["east"]


@dataclass
class Corpus:
    """Events to publish, in order, each with the stream it goes on and its key."""

    rng: random.Random
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    clock: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(minutes=5))

    def _envelope(self, kind: str, n: int) -> dict[str, Any]:
        self.clock += timedelta(milliseconds=1)
        return {
            "specversion": "1.0",
            "id": f"{kind}-{n}",
            "source": "urn:test",
            "time": self.clock.isoformat(),
            "classification": self.rng.choice(LEVELS),
            "releasableto": ",".join(sorted(self.rng.sample(MARKINGS, self.rng.randint(1, 3)))),
        }

    def add(self, n: int, *, entities: int = 40, sa_share: float = 0.7) -> None:
        rng = self.rng
        for i in range(len(self.events), len(self.events) + n):
            if rng.random() < sa_share:
                self._sa(i, entities)
            else:
                self._command(i)

    def _point(self) -> dict[str, float]:
        return {
            "lat": round(self.rng.uniform(40, 65), 4),
            "lon": round(self.rng.uniform(-5, 30), 4),
        }

    def _sa(self, i: int, entities: int) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            track = f"TRK-{rng.randrange(entities)}"
            event = self._envelope("trk", i) | {
                "type": "c2bus.sa.track.v1",
                "data": {"track_id": track, "position": self._point(), "domain": "AIR"},
            }
            self.events.append(("sa", track, event))
            return
        unit = rng.choice(UNITS)
        if roll < 0.8:
            event = self._envelope("pos", i) | {
                "type": "c2bus.sa.position.v1",
                "data": {"unit_id": unit, "position": self._point()},
            }
        else:
            event = self._envelope("ust", i) | {
                "type": "c2bus.sa.unit-status.v1",
                "data": {"unit_id": unit, "readiness": "FULLY_OPERATIONAL"},
            }
        self.events.append(("sa", unit, event))

    def _command(self, i: int) -> None:
        rng = self.rng
        issuer, target = rng.choice(UNITS), rng.choice(TARGETS)
        stream = rng.choice(["directives", "decisions", "status"])
        directive_id = f"dir-{i}"
        if stream == "directives":
            event = self._envelope("dir", i) | {
                "type": "c2bus.directive.v1",
                "data": {
                    "kind": "MOVE",
                    "issuer": issuer,
                    "target": target,
                    "expires": "2099-01-01T00:00:00Z",
                },
            }
            event["id"] = directive_id
            # As the enforcer releases it: naming its decision and when it was made.
            event["decisionid"] = f"decision:{directive_id}"
            event["decidedat"] = event["time"]
            self.events.append((stream, target, event))
        elif stream == "decisions":
            event = self._envelope("dec", i) | {
                "type": "c2bus.decision.v1",
                "data": {
                    "directive_id": directive_id,
                    "verdict": rng.choice(["ALLOW", "DENY", "HOLD"]),
                    "issuer": issuer,
                    "target": target,
                    "kind": "MOVE",
                    "policy_set_id": "alliance-main",
                    "policy_version": 1,
                    "policy_hash": "sha256:" + "ab" * 32,
                },
            }
            self.events.append((stream, directive_id, event))
        else:
            event = self._envelope("sts", i) | {
                "type": "c2bus.directive.status.v1",
                "data": {
                    "directive_id": directive_id,
                    "state": rng.choice(["DECIDED", "DELIVERED", "WILCO"]),
                    "actor": target,
                    "issuer": issuer,
                    "target": target,
                },
            }
            self.events.append((stream, directive_id, event))

    def visible(self, viewer: Viewer) -> set[str]:
        """Every event id ``viewer`` may receive, live or resumed."""
        return {e["id"] for stream, _, e in self.events if viewer.may_see(stream, e)}

    def snapshot(self, viewer: Viewer) -> set[str]:
        """What the latest-SA snapshot holds for ``viewer``: each entity's latest state, if
        the viewer may see that state."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for stream, key, event in self.events:
            if stream == "sa":
                latest[(event["type"], key)] = event
        return {e["id"] for e in latest.values() if viewer.may_see("sa", e)}


def random_viewer(rng: random.Random) -> Viewer:
    unit = rng.choice(COMMANDS)
    streams = sorted(rng.sample(list(STREAM_TYPES), rng.randint(1, 4)))
    viewer = Viewer(rng.choice(NATIONS), rng.choice(LEVELS), unit, streams)
    if rng.random() < 0.3:
        pool = [t for s in streams for t in STREAM_TYPES[s]]
        viewer.types = sorted(rng.sample(pool, rng.randint(1, len(pool))))
    if rng.random() < 0.4:
        south, west = rng.uniform(40, 58), rng.uniform(-5, 20)
        viewer.area = {
            "south": round(south, 2),
            "west": round(west, 2),
            "north": round(south + rng.uniform(2, 10), 2),
            "east": round(west + rng.uniform(3, 15), 2),
        }
    if rng.random() < 0.4:
        below = [u for u in UNITS if within(u, unit)]
        viewer.units = rng.choice(below)
    return viewer
