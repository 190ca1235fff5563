"""The dashboards show data: a real Prometheus (Debian's ``prometheus``) scrapes a whole
local system started by ``c2bus up`` under simulated load, and every query of every panel
in ``deploy/grafana/dashboards`` returns data through Prometheus's HTTP API. The alert
rules load and evaluate without error, and ``c2bus trace`` shows a simulator directive's
whole lifecycle (the simulator's command posts acknowledge it)."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from c2bus.adapters.kafka import new_producer, read_to_end, start_client
from c2bus.adapters.settings import KafkaSettings
from c2bus.core.codec import decode_event
from c2bus.core.events import DirectiveEvent
from c2bus.errors import InvalidEvent
from tests.conftest import ROOT, require_tool
from tests.integration.test_up import running_up
from tests.unit.test_cli import run

KAFKA_PORT = "31092"  # below the ephemeral port range, apart from the other suites
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
SERVICES = ("INGEST", "ENFORCER", "POLICY_API", "GATEWAY", "GATEWAY_OPS", "PROMETHEUS")


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) for every query of every panel."""
    queries = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                queries.append((board["title"], panel["title"], target["expr"]))
    return queries


def prometheus_api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def has_data(data: dict[str, Any]) -> bool:
    """At least one series with a finite value (a quantile of nothing is NaN)."""
    results = data["result"] if data["resultType"] in ("vector", "matrix") else [data]
    for series in results:
        value = series.get("value") or (series.get("values") or [[0, "NaN"]])[-1]
        if math.isfinite(float(value[1])):
            return True
    return False


async def bad_records(kafka: KafkaSettings) -> None:
    """Records no service can read: each consumer dead-letters them and goes on."""
    producer = new_producer(kafka, "observability-test")
    await start_client(producer, kafka)
    try:
        for topic in ("c2.sa", "c2.directives.submitted"):
            for i in range(3):
                await producer.send_and_wait(topic, b'{"not": "an event"', key=f"bad-{i}".encode())
    finally:
        await producer.stop()


async def simulator_directives(kafka: KafkaSettings) -> list[str]:
    """The ids of the simulator's directives on the submitted topic, oldest first."""
    found = []
    for record in await read_to_end(kafka, "c2.directives.submitted"):
        try:
            event = decode_event(record.value)
        except InvalidEvent:
            continue  # the bad records this test wrote
        if isinstance(event, DirectiveEvent) and ":sim:simulator-1:directive:" in event.id:
            found.append((event.time, event.id))
    return [directive_id for _, directive_id in sorted(found)]


async def refused_handshake(url: str) -> None:
    with pytest.raises(InvalidStatus):
        async with connect(url, subprotocols=["c2bus.v1"], open_timeout=5):  # type: ignore[list-item]
            pass


def post_sa(env: dict[str, str], port: int, example: dict[str, Any]) -> None:
    """One SA event through ingest's HTTP API, with a publisher's token."""
    token = run("token", "--unit", "JFC-BRUNSSUM", "--roles", "sa-publisher", env=env)
    assert token.returncode == 0, token.stderr
    event = example | {"id": f"obs-{uuid.uuid4()}", "time": datetime.now(UTC).isoformat()}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/sa",
        data=json.dumps(event).encode(),
        headers={
            "Authorization": f"Bearer {token.stdout.strip()}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def test_every_dashboard_panel_shows_data_from_a_running_system(tmp_path: Path) -> None:
    require_tool("prometheus")
    queries = panel_queries()
    assert len(DASHBOARDS) == 3 and len(queries) >= 30
    track = json.loads((ROOT / "schemas" / "examples" / "valid" / "sa-track.json").read_text())
    args = ["--tracks", "20", "--rate", "2", "--directive-every", "0.5"]
    with running_up(tmp_path, KAFKA_PORT, args, SERVICES, {"C2BUS_PROMETHEUS_SCRAPE_S": "1"}) as up:
        prometheus = f"http://127.0.0.1:{up.ports['PROMETHEUS']}"
        assert prometheus in up.output  # `make run` prints where Prometheus is
        asyncio.run(bad_records(up.cluster.client()))
        asyncio.run(refused_handshake(f"ws://127.0.0.1:{up.ports['GATEWAY']}"))
        post_sa(up.env, up.ports["INGEST"], track)

        deadline = time.monotonic() + 120
        missing = queries
        while missing and time.monotonic() < deadline:
            time.sleep(3)
            missing = [
                (board, title, expr)
                for board, title, expr in missing
                if not has_data(prometheus_api(prometheus, "/api/v1/query", query=expr))
            ]
        assert not missing, "panels without data:\n" + "\n".join(
            f"  {board} / {title}: {expr}" for board, title, expr in missing
        )

        targets = prometheus_api(prometheus, "/api/v1/targets")["activeTargets"]
        assert {t["labels"]["job"]: t["health"] for t in targets} == {
            "c2bus-ingest": "up",
            "c2bus-enforcer": "up",
            "c2bus-policy-api": "up",
            "c2bus-gateway": "up",
            "prometheus": "up",
        }
        groups = prometheus_api(prometheus, "/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert {g["name"] for g in groups} == {"c2bus-recording", "c2bus-alerts"}
        assert len(rules) >= 12
        assert all(rule["health"] == "ok" for rule in rules), [
            (rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"
        ]
        firing = [
            rule["name"]
            for rule in rules
            if rule.get("type") == "alerting" and rule["state"] == "firing"
        ]
        assert "C2busEnforcerDown" not in firing and "C2busNoPolicyInForce" not in firing

        # `c2bus trace`: a simulator directive's whole lifecycle, with the time of each hop.
        steps: list[str] = []
        # the gateway scoped each id to its issuer: read them back from the topic
        for directive_id in asyncio.run(simulator_directives(up.cluster.client()))[:30]:
            traced = run("trace", directive_id, "--json", "--since", "1h", env=up.env)
            assert traced.returncode == 0, traced.stdout + traced.stderr
            timeline = json.loads(traced.stdout)
            steps = [step["step"] for step in timeline["steps"]]
            if "have_do" in steps:
                break
        assert steps[:2] == ["submitted", "decided"] and steps[-1] == "have_do", steps
        assert {"delivered", "wilco"} <= set(steps), steps
        assert all(s["since_previous_ms"] >= 0 for s in timeline["steps"][1:])
        assert timeline["total_ms"] > 0
        text = run("trace", directive_id, "--since", "1h", env=up.env)
        assert text.returncode == 0, text.stderr
        for word in ("submitted", "decided", "ALLOW", "delivered", "wilco", "have_do", "Total:"):
            assert word in text.stdout, text.stdout
