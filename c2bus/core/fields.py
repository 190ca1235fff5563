"""Field types shared by the event contracts and the policy document."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from c2bus.core.labels import RELEASABLE_TO_PATTERN

Timestamp = Annotated[
    datetime,
    Meta(tz=True, description="RFC 3339 timestamp with a UTC offset, e.g. 2026-11-26T07:00:00Z"),
]
_IDENT = r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}"
Identifier = Annotated[
    str,
    Meta(
        pattern=rf"^{_IDENT}$",
        description="An identifier: letters, digits and . _ : / - (1 to 128 characters)",
    ),
]
#: Between a namespace (a unit id) and the identifier chosen in it; no identifier holds one.
NAMESPACE_SEPARATOR = "~"
#: An identifier in its publisher's namespace, ``<unit>~<identifier>`` (e.g. a track id,
#: scoped by the ingest to the unit whose sensor reported it); the namespace is optional
#: only so that feeds writing to Kafka directly keep their own names.
SCOPED_IDENTIFIER_PATTERN = rf"^(?:{_IDENT}{NAMESPACE_SEPARATOR})?{_IDENT}$"
ScopedIdentifier = Annotated[
    str,
    Meta(
        pattern=SCOPED_IDENTIFIER_PATTERN,
        description="An identifier, optionally in a unit's namespace: <unit>~<identifier>",
    ),
]
EventId = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=4096)]
ReleasableTo = Annotated[
    str,
    Meta(
        pattern=RELEASABLE_TO_PATTERN,
        description="Comma-separated ISO 3166-1 alpha-3 nation codes or NATO, e.g. NATO or DEU,FRA",
    ),
]
Latitude = Annotated[float, Meta(ge=-90.0, le=90.0)]
Longitude = Annotated[float, Meta(ge=-180.0, le=180.0)]
Bearing = Annotated[float, Meta(ge=0.0, lt=360.0, description="Degrees true, 0 ≤ x < 360")]
Speed = Annotated[float, Meta(ge=0.0, description="Metres per second")]
Percent = Annotated[float, Meta(ge=0.0, le=100.0)]


class GeoPoint(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A WGS 84 position; altitude in metres above mean sea level when known."""

    lat: Latitude
    lon: Longitude
    alt_m: float | None = None
