"""Areas as polygons of WGS 84 points, tested by ray casting (planar in degrees).

Good for the theatre-sized areas caveats and ROE use away from the poles and the
antimeridian; a directive's area is inside an allowed area when all its vertices are
(exact for convex allowed areas).
"""

from __future__ import annotations

from dataclasses import dataclass

from c2bus.core.fields import GeoPoint


@dataclass(frozen=True, slots=True)
class Polygon:
    lats: tuple[float, ...]
    lons: tuple[float, ...]
    south: float
    north: float
    west: float
    east: float

    @classmethod
    def of(cls, points: list[GeoPoint]) -> Polygon:
        lats = tuple(p.lat for p in points)
        lons = tuple(p.lon for p in points)
        return cls(lats, lons, min(lats), max(lats), min(lons), max(lons))

    def area_deg2(self) -> float:
        """Absolute shoelace area in square degrees (0 for a degenerate polygon)."""
        n = len(self.lats)
        twice = sum(
            self.lons[i] * self.lats[(i + 1) % n] - self.lons[(i + 1) % n] * self.lats[i]
            for i in range(n)
        )
        return abs(twice) / 2

    def contains(self, lat: float, lon: float) -> bool:
        if not (self.south <= lat <= self.north and self.west <= lon <= self.east):
            return False
        inside = False
        lats, lons = self.lats, self.lons
        j = len(lats) - 1
        for i in range(len(lats)):
            if (lats[i] > lat) != (lats[j] > lat):
                crossing = lons[i] + (lat - lats[i]) * (lons[j] - lons[i]) / (lats[j] - lats[i])
                if lon < crossing:
                    inside = not inside
            j = i
        return inside

    def covers(self, points: list[GeoPoint]) -> bool:
        return all(self.contains(p.lat, p.lon) for p in points)
