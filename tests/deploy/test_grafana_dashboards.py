"""The Grafana dashboards and provisioning under ``deploy/grafana`` fit together: a stock
Grafana given the provisioning files loads every dashboard, each panel queries the
provisioned data source, and every query is plain PromQL that Prometheus runs unchanged
(``tests/integration/test_observability.py`` runs them all against a live system)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.conftest import ROOT

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def boards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in DASHBOARDS]


def test_the_three_dashboards_are_there_with_unique_ids() -> None:
    titles = {b["title"] for b in boards()}
    assert titles == {"c2bus — overview", "c2bus — directive pipeline", "c2bus — gateway"}
    uids = [b["uid"] for b in boards()]
    assert len(set(uids)) == len(uids)
    for board in boards():
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), board["title"]


def test_every_panel_queries_the_provisioned_prometheus() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/c2bus.yml").read_text())
    [source] = sources["datasources"]
    assert source["type"] == "prometheus"
    for board in boards():
        for panel in board["panels"]:
            assert panel["targets"], f"{board['title']} / {panel['title']} has no query"
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": source["uid"]}
                expr = target["expr"]
                assert "c2bus" in expr or expr.startswith("up{"), expr
                assert "$" not in expr, f"{expr}: Grafana variables do not run in Prometheus"


def test_the_provider_loads_the_dashboards_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/c2bus.yml").read_text())
    [entry] = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"].endswith("/dashboards/c2bus")


def test_panels_do_not_overlap() -> None:
    for board in boards():
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24, panel["title"]
            xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
            area = {(x, y) for x in xs for y in ys}
            assert not cells & area, f"{board['title']} / {panel['title']} overlaps"
            cells |= area
