"""Rendering the picture with rich: tracks updating, directives arriving, denials explained."""

from __future__ import annotations

import time

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from c2bus.tools.console.picture import Picture

MAX_TRACK_ROWS = 18
VERDICT_STYLE = {"ALLOW": "bold green", "DENY": "bold red", "HOLD": "bold yellow"}
IDENTITY_STYLE = {
    "HOSTILE": "red",
    "SUSPECT": "magenta",
    "FRIEND": "cyan",
    "ASSUMED_FRIEND": "cyan",
}


def render(picture: Picture, url: str) -> Group:
    ident = picture.identity
    header = Text.assemble(
        ("c2bus console  ", "bold"),
        (f"{picture.status}  ", "green" if picture.status == "connected" else "yellow"),
        f"{url}  ",
        (f"{ident.get('sub', '?')} @ {ident.get('unit', '?')}  ", "bold"),
        f"{ident.get('nation', '?')} / {ident.get('clearance', '?')}   ",
        f"tracks {len(picture.tracks)}  events {sum(picture.counts.values())} "
        f"({picture.rate():.1f}/s)",
    )

    tracks = Table(expand=True, title="Tracks (latest)", title_justify="left")
    for column in (
        "track",
        "identity",
        "domain",
        "lat",
        "lon",
        "course",
        "speed m/s",
        "label",
        "age",
    ):
        tracks.add_column(column)
    now = time.monotonic()
    for track_id in sorted(picture.tracks)[:MAX_TRACK_ROWS]:
        event = picture.tracks[track_id]
        data = event["data"]
        pos = data.get("position", {})
        identity = data.get("identity", "UNKNOWN")
        tracks.add_row(
            track_id,
            Text(identity, IDENTITY_STYLE.get(identity, "")),
            data.get("domain", ""),
            f"{pos.get('lat', 0):.4f}",
            f"{pos.get('lon', 0):.4f}",
            f"{data.get('course_deg', 0):.0f}",
            f"{data.get('speed_mps', 0):.0f}",
            f"{event.get('classification')} // {event.get('releasableto')}",
            f"{now - picture.seen_at.get(track_id, now):.0f}s",
        )
    if len(picture.tracks) > MAX_TRACK_ROWS:
        tracks.caption = f"… and {len(picture.tracks) - MAX_TRACK_ROWS} more"

    directives = Table(expand=True, title="Directives (approved)", title_justify="left")
    for column in ("time", "kind", "issuer", "target"):
        directives.add_column(column)
    for event in picture.directives:
        data = event["data"]
        directives.add_row(
            str(event.get("time", ""))[11:19], data["kind"], data["issuer"], data["target"]
        )

    decisions = Table(expand=True, title="Decisions on our directives", title_justify="left")
    for column in ("verdict", "kind", "target", "reason"):
        decisions.add_column(column)
    for event in picture.decisions:
        data = event["data"]
        reasons = "; ".join(r["message"] for r in data.get("reasons", [])) or "policy satisfied"
        verdict = data["verdict"]
        decisions.add_row(
            Text(verdict, VERDICT_STYLE.get(verdict, "")), data["kind"], data["target"], reasons
        )
    return Group(Panel(header), tracks, directives, decisions)
