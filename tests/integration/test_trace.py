"""``c2bus trace`` on real Kafka: a directive driven through the real enforcer and gateway,
acknowledged by consoles of its target unit, then traced through the command itself."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from c2bus.adapters.topics import TopicNames
from c2bus.tools.cli import main
from tests.integration.services import (
    Console,
    Env,
    enforcer,
    event_id,
    gateway,
    kafka_vars,
    publish_reference_policy,
)
from tests.integration.test_held import approval, attested, decisions_for, engage
from tests.integration.test_pipeline import produce


@pytest.fixture
def cli_env(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The command's environment: this test's broker and topic prefix."""
    for name, value in kafka_vars(env.kafka).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("C2BUS_TOPIC_PREFIX", env.prefix)
    level = logging.getLogger("aiokafka").level  # main() quietens aiokafka: put it back
    yield
    logging.getLogger("aiokafka").setLevel(level)


async def c2bus(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``c2bus ARGS`` in this process (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def status_of(directive_id: str, state: str) -> Any:
    return lambda f: (
        f["stream"] == "status"
        and f["event"]["data"]["directive_id"] == directive_id
        and f["event"]["data"]["state"] == state
    )


async def test_trace_follows_a_directive_from_submission_to_have_do(
    env: Env, topics: TopicNames, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    await publish_reference_policy(env)
    body = {
        "kind": "MOVE",
        "target": "POL-12BDE",
        "expires": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
        "area": [{"lat": 52.0, "lon": 5.0}, {"lat": 52.0, "lon": 6.0}, {"lat": 52.5, "lon": 5.5}],
        "text": "Move to assembly area BRAVO.",
    }
    async with (
        enforcer(env),
        gateway(env) as gw,
        Console.connect(
            gw.port, env.token(unit="MNC-NE", roles=("console", "commander"))
        ) as issuer,
        Console.connect(gw.port, env.token(unit="POL-12BDE", nation="POL")) as target,
        Console.connect(gw.port, env.token(unit="POL-12BDE", nation="POL")) as second,
    ):
        directive_id = await issuer.submit(body)
        for console in (target, second):
            await console.events_until(
                lambda f: f["stream"] == "directives" and event_id(f) == directive_id
            )
        # Both target sessions report delivery before the acknowledgements.
        delivered = status_of(directive_id, "DELIVERED")
        await issuer.events_until(lambda f: sum(map(delivered, issuer.frames)) >= 2)
        for n, state in enumerate(("WILCO", "HAVE_DO")):
            ack = {"op": "ack", "id": f"ack-{n}", "directive_id": directive_id, "state": state}
            await target.ws.send(json.dumps(ack))
            acked = await target.reply_to(f"ack-{n}", ("acked", "error"))
            assert acked["op"] == "acked", acked
        await issuer.events_until(status_of(directive_id, "HAVE_DO"))

    code, out, err = await c2bus(capsys, "trace", directive_id, "--json")
    assert code == 0, err
    doc = json.loads(out)
    steps = doc["steps"]
    assert [s["step"] for s in steps] == [
        "submitted",
        "decided",
        "delivered",
        "delivered",
        "wilco",
        "have_do",
    ]
    assert doc["directive_id"] == directive_id
    assert doc["state"] == "HAVE_DO"
    assert doc["held"] is None
    assert doc["directive"] == {
        "kind": "MOVE",
        "issuer": "MNC-NE",
        "target": "POL-12BDE",
        "classification": "NATO SECRET",
        "releasableto": "NATO",
    }
    assert steps[0]["since_previous_ms"] is None
    assert all(s["since_previous_ms"] >= 0 for s in steps[1:])
    elapsed = [s["elapsed_ms"] for s in steps]
    assert elapsed == sorted(elapsed) and elapsed[0] == 0
    assert doc["total_ms"] == elapsed[-1] > 0
    times = [datetime.fromisoformat(s["time"]) for s in steps]
    assert times == sorted(times)

    submitted_step, decided, first, again, wilco, have_do = steps
    assert submitted_step["issuer"] == "MNC-NE"
    assert submitted_step["records"][0]["topic"] == topics.submitted
    assert submitted_step["records"][0]["kafka_time"] is not None
    assert decided["verdict"] == "ALLOW"
    assert decided["policy_set_id"] == "alliance-main"
    assert decided["policy_version"] == 1
    assert decided["policy_hash"].startswith("sha256:")
    assert decided["approved"] is True
    assert [r["topic"] for r in decided["records"]] == [
        topics.decisions,
        topics.status,
        topics.approved,
    ]
    for step in (first, again, wilco, have_do):
        assert step["actor"] == "POL-12BDE"
        assert step["console"] == "test-pol-12bde"
        assert step["records"][0]["topic"] == topics.status
    assert doc["searched"]["skipped_undecodable"] == 0
    assert doc["searched"]["records"] >= 6

    code, out, err = await c2bus(capsys, "trace", directive_id, "--since", "30m")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        f"Directive {directive_id}: MOVE from MNC-NE to POL-12BDE (NATO SECRET, releasable to NATO)"
    )
    assert lines[1] == "State: HAVE_DO"
    names = ["submitted", "decided", "delivered", "delivered", "wilco", "have_do"]
    rows = [ln for ln in lines if ln.split()[:1] and ln.split()[0] in names]
    assert [row.split()[0] for row in rows] == names
    assert all(re.search(r"\s\+\d+(\.\d+)? (ms|s)\s", row) for row in rows[1:])
    assert "ALLOW under alliance-main v1" in out
    assert f"released at {topics.approved}/" in out
    assert "to console test-pol-12bde of POL-12BDE" in out
    assert any(
        ln.startswith("Total: ") and ln.endswith("from submitted to have_do") for ln in lines
    )


async def test_a_held_directive_shows_as_waiting_and_bad_records_are_skipped(
    env: Env,
    topics: TopicNames,
    cli_env: None,
    valid_example: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    far = datetime.now(UTC) + timedelta(hours=2)
    async with enforcer(env):
        await produce(
            env.kafka, topics.submitted, (b"POL-12BDE", engage(valid_example, "d-held", far))
        )
        await decisions_for(env, topics, "d-held", 1)
        await produce(
            env.kafka,
            topics.submitted,
            attested(env, approval("d-held", "alice", ["approver"])),
        )
        await decisions_for(env, topics, "d-held", 2)
    await produce(env.kafka, topics.status, (b"d-held", b"{not an event"))

    code, out, err = await c2bus(capsys, "trace", "d-held", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [s["step"] for s in doc["steps"]] == ["submitted", "decided", "approval", "decided"]
    assert [s.get("verdict") for s in doc["steps"]] == [None, "HOLD", None, "HOLD"]
    assert [s.get("approvals") for s in doc["steps"]] == [None, 0, None, 1]
    assert doc["steps"][1]["reasons"][0]["rule"] == "approval.two-person"
    assert doc["state"] == "HELD"
    assert doc["held"] == {
        "approvals": [{"approver": "alice", "nation": "GBR", "roles": ["approver"]}]
    }
    assert doc["searched"]["skipped_undecodable"] == 1

    code, out, err = await c2bus(capsys, "trace", "d-held")
    assert code == 0, err
    assert "waiting for approval (approvals so far: alice (GBR, approver))" in out
    assert "- approval.two-person: " in out
    assert "note: 1 record(s) in the window could not be decoded and were skipped" in out


async def test_a_directive_not_in_the_window_is_an_error(
    env: Env, topics: TopicNames, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await c2bus(capsys, "trace", "d-nowhere", "--since", "1h", "--timeout", "30")
    assert code == 1
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("c2bus: error: directive 'd-nowhere' not found")
    assert "--since" in line

    # A prefix without topics says so, rather than finding nothing.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("C2BUS_TOPIC_PREFIX", f"{env.prefix}x")
        code, out, err = await c2bus(capsys, "trace", "d-nowhere")
    assert code == 1
    assert err.startswith("c2bus: error: topics missing: ")
    assert "C2BUS_TOPIC_PREFIX" in err
