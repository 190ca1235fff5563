"""The gateway's streams on real Kafka with real WebSocket consoles: the latest-SA snapshot,
resume by positions (no gap, no duplicate), resync when retention cut the history short,
the directive lifecycle from submit to WILCO, and two gateways side by side."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from websockets.exceptions import ConnectionClosed

from c2bus.adapters.kafka import client_options
from c2bus.adapters.policy_store import publish
from c2bus.adapters.topics import TopicNames
from c2bus.core.labels import Classification
from c2bus.core.policy.compiler import load_policy_document
from tests.integration.services import (
    REFERENCE_POLICY,
    Console,
    Env,
    enforcer,
    event_id,
    gateway,
    gateway_process,
    lifecycle,
    publish_reference_policy,
)
from tests.integration.test_pipeline import produce
from tests.integration.test_roundtrip import read_all


def track(
    valid_example: Any,
    event_id: str,
    track_id: str,
    *,
    lat: float = 52.1,
    lon: float = 5.2,
    classification: str = "NATO UNCLASSIFIED",
    releasable: str = "NATO",
    at: datetime | None = None,
) -> bytes:
    doc = copy.deepcopy(valid_example("sa-track"))
    doc["id"] = event_id
    doc["time"] = (at or datetime.now(UTC)).isoformat()
    doc["classification"] = classification
    doc["releasableto"] = releasable
    doc["data"]["track_id"] = track_id
    doc["data"]["position"] = {"lat": lat, "lon": lon}
    return json.dumps(doc).encode()


async def test_snapshot_gives_the_latest_state_in_scope_then_live(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    history = [
        (b"T1", track(valid_example, "t1-old", "T1", lat=52.0)),
        (b"T2", track(valid_example, "t2-secret", "T2", classification="NATO SECRET")),
        (b"T3", track(valid_example, "t3-poland", "T3", lat=52.2, lon=21.0)),
        (b"T1", track(valid_example, "t1-new", "T1", lat=52.3)),
        (b"T4", track(valid_example, "t4-aus-only", "T4", releasable="AUS")),
        # stamped a day ahead: refused, it must not pin T1's state until tomorrow
        (b"T1", track(valid_example, "t1-future", "T1", at=tomorrow)),
        # a later record stamped earlier (a sensor's clock): Kafka's order wins, as live
        (b"T3", track(valid_example, "t3-late", "T3", lat=52.2, lon=21.0, at=earlier)),
    ]
    await produce(env.kafka, topics.sa, *history)
    netherlands = {"south": 50.7, "west": 3.3, "north": 53.6, "east": 7.3}
    # The gateway starts after the history: it reads it back at start-up.
    async with (
        gateway(env) as gw,
        Console.connect(gw.port, env.token(), ("sa",)) as everything,
        Console.connect(gw.port, env.token(), ("sa",), area=netherlands) as dutch_aoi,
        Console.connect(
            gw.port,
            env.token(clearance=Classification.NATO_RESTRICTED),
            ("sa",),
            snapshot=False,
        ) as no_snapshot,
    ):
        assert sorted(event_id(f) for f in everything.states) == [
            "t1-new",
            "t2-secret",
            "t3-late",
        ]
        assert sorted(event_id(f) for f in dutch_aoi.states) == ["t1-new", "t2-secret"]
        assert no_snapshot.states == []
        # snapshot_end names every SA partition: a console can resume from there
        partitions = await _partitions(env, topics.sa)
        assert set(everything.positions) == {f"{topics.sa}/{p}" for p in partitions}
        await produce(env.kafka, topics.sa, (b"T3", track(valid_example, "t3-live", "T3")))
        for console in (everything, dutch_aoi, no_snapshot):
            await console.events_until(lambda f: event_id(f) == "t3-live")
            assert [event_id(f) for f in console.frames] == ["t3-live"]  # no history
    [refused] = await read_all(env.kafka, topics.dlq)
    assert json.loads(refused.value)["id"] == "t1-future"
    reason = dict(refused.headers)["__connect.errors.exception.message"].decode()
    assert "ahead of this clock" in reason and "$.time" in reason


async def _partitions(env: Env, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**client_options(env.kafka))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


async def test_resume_sends_exactly_what_was_missed_and_then_live(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    def batch(tag: str, n: int) -> list[tuple[bytes, bytes]]:
        return [
            (
                f"T{i % 7}".encode(),
                track(
                    valid_example,
                    f"{tag}-{i}",
                    f"T{i % 7}",
                    classification="NATO SECRET" if i % 5 == 0 else "NATO UNCLASSIFIED",
                ),
            )
            for i in range(n)
        ]

    async with gateway(env) as gw:
        token = env.token(clearance=Classification.NATO_RESTRICTED)  # never sees the secret fifth
        async with Console.connect(gw.port, token, ("sa",)) as first:
            await produce(env.kafka, topics.sa, *batch("a", 40))
            await first.events_until(lambda f: event_id(f) == "a-39")
            positions = dict(first.positions)
            before = [event_id(f) for f in first.frames]  # others may still be on their way
        await produce(env.kafka, topics.sa, *batch("b", 60))  # while disconnected
        async with Console.connect(gw.port, token, ("sa",), positions=positions) as again:
            assert again.states == []  # a resume is not a snapshot
            await produce(env.kafka, topics.sa, *batch("c", 20))
            allowed = [
                f"{t}-{i}" for t, n in (("a", 40), ("b", 60), ("c", 20)) for i in range(n) if i % 5
            ]
            got = await again.events_with(set(allowed) - set(before))
        allowed = [
            f"{t}-{i}" for t, n in (("a", 40), ("b", 60), ("c", 20)) for i in range(n) if i % 5
        ]
        # Together: every event it may see exactly once, whichever connection brought it.
        assert sorted(before + got) == sorted(allowed)
        assert set(got) >= {e for e in allowed if e[0] in "bc"}
        assert gw.registry.get_sample_value("c2bus_gateway_resumes_total", {"mode": "resume"}) == 1


async def test_resync_when_retention_dropped_what_the_console_missed(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    async with gateway(env) as gw:
        async with Console.connect(gw.port, env.token(), ("sa",)) as first:
            await produce(env.kafka, topics.sa, (b"T1", track(valid_example, "x-0", "T1")))
            await first.events_until(lambda f: event_id(f) == "x-0")
            positions = dict(first.positions)
        await produce(
            env.kafka,
            topics.sa,
            *[(b"T1", track(valid_example, f"x-{i}", "T1")) for i in range(1, 6)],
        )
        # Retention takes the partition's history, including what the console missed.
        partition = int(next(k for k, v in positions.items() if v >= 0).rpartition("/")[2])
        admin = AIOKafkaAdminClient(**client_options(env.kafka))
        await admin.start()
        try:
            tp = TopicPartition(topics.sa, partition)
            await admin.delete_records(
                {tp: RecordsToDelete(positions[f"{topics.sa}/{partition}"] + 4)}
            )
        finally:
            await admin.close()
        async with Console.connect(gw.port, env.token(), ("sa",), positions=positions) as again:
            [resync] = [r for r in again.replies if r["op"] == "resync"] or [
                await again.reply_to("s", ("resync",))
            ]
            assert resync["partitions"] == [f"{topics.sa}/{partition}"]
            # and a fresh snapshot: the latest state of T1, which survived retention
            assert [event_id(f) for f in again.states] == ["x-5"]


async def test_a_directive_goes_submit_decided_delivered_wilco_and_the_issuer_sees_each(
    env: Env,
) -> None:
    await publish_reference_policy(env)
    expires = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    body = {
        "kind": "MOVE",
        "target": "POL-12BDE",
        "expires": expires,
        "area": [{"lat": 52.0, "lon": 5.0}, {"lat": 52.0, "lon": 6.0}, {"lat": 52.5, "lon": 5.5}],
        "text": "Move to assembly area BRAVO.",
    }
    async with (
        enforcer(env),
        gateway(env, C2BUS_GATEWAY_SUBMIT_RATE="2") as gw,
        Console.connect(
            gw.port, env.token(unit="MNC-NE", roles=("console", "commander"))
        ) as issuer,
        Console.connect(gw.port, env.token(unit="POL-12BDE", nation="POL")) as target,
        Console.connect(gw.port, env.token(unit="LTU-IRON-WOLF", nation="LTU")) as bystander,
    ):
        directive_id = await issuer.submit(body)
        # the same submission, for the refusals below
        submit = {
            "op": "submit",
            "directive": body,
            "classification": "NATO SECRET",
            "releasableto": "NATO",
        }

        step = functools.partial(lifecycle, directive_id)

        await issuer.events_until(step("DECIDED"))
        delivered = await target.events_until(
            lambda f: f["stream"] == "directives" and event_id(f) == directive_id
        )
        assert delivered[-1]["event"]["data"]["issuer"] == "MNC-NE"  # from the token
        await issuer.events_until(step("DELIVERED"))
        await target.ws.send(
            json.dumps({"op": "ack", "id": "ack-1", "directive_id": directive_id, "state": "WILCO"})
        )
        acked = await target.reply_to("ack-1", ("acked", "error"))
        assert acked["op"] == "acked", acked
        await issuer.events_until(step("WILCO"))
        states = [
            f["event"]["data"]["state"]
            for f in issuer.frames
            if f["stream"] == "status" and f["event"]["data"]["directive_id"] == directive_id
        ]
        assert states == ["DECIDED", "DELIVERED", "WILCO"]
        decided = next(f for f in issuer.frames if step("DECIDED")(f))
        assert decided["event"]["data"]["reason"].startswith("ALLOW")

        # Refusals, each correlated to its request.
        await bystander.ws.send(
            json.dumps({"op": "ack", "id": "ack-2", "directive_id": directive_id, "state": "WILCO"})
        )
        refused = await bystander.reply_to("ack-2", ("error",))
        # told no more than of a directive that does not exist: not who its target is
        await bystander.ws.send(
            json.dumps({"op": "ack", "id": "ack-3", "directive_id": "no-such", "state": "WILCO"})
        )
        unknown = await bystander.reply_to("ack-3", ("error",))
        assert refused["code"] == unknown["code"] == "unknown_directive", refused
        assert refused["message"] == unknown["message"].replace("no-such", directive_id)
        assert delivered[-1]["event"]["data"]["target"] not in refused["message"]
        await target.ws.send(json.dumps({**submit, "id": "sub-2"}))  # no commander role
        assert (await target.reply_to("sub-2", ("error",)))["code"] == "forbidden"
        forged = {**submit, "id": "sub-3", "directive": {**body, "issuer": "SHAPE"}}
        await issuer.ws.send(json.dumps(forged))
        assert (await issuer.reply_to("sub-3", ("error",)))["code"] == "bad_request"
        for n in range(6):  # 2 per second, bursts of 4: some of these are turned away
            await issuer.ws.send(json.dumps({**submit, "id": f"burst-{n}"}))
        replies = [await issuer.reply_to(f"burst-{n}", ("submitted", "error")) for n in range(6)]
        limited = [r for r in replies if r["op"] == "error"]
        assert limited and all(r["code"] == "rate_limited" for r in limited)
        assert all(r["retry_after_ms"] > 0 for r in limited)
        assert not any(step("DECIDED")(f) for f in bystander.frames)


async def test_two_gateway_processes_serve_their_consoles_alike_and_a_console_can_move(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    records = [
        (f"T{i % 5}".encode(), track(valid_example, f"e-{i}", f"T{i % 5}", lat=50 + i % 5))
        for i in range(60)
    ]
    narrow = {"south": 49.5, "west": 0.0, "north": 51.5, "east": 10.0}  # lat 50 and 51
    async with (
        gateway_process(env, "gw-a") as a,
        gateway_process(env, "gw-b") as b,
        Console.connect(a, env.token(), ("sa",)) as on_a,
        Console.connect(b, env.token(), ("sa",)) as on_b,
        Console.connect(a, env.token(), ("sa",), area=narrow) as narrow_a,
        Console.connect(b, env.token(), ("sa",), area=narrow) as narrow_b,
    ):
        await produce(env.kafka, topics.sa, *records[:30])
        everything = {f"e-{i}" for i in range(30)}
        in_area = {f"e-{i}" for i in range(30) if i % 5 in (0, 1)}
        for console, expected in ((on_a, everything), (on_b, everything)):
            assert sorted(await console.events_with(expected)) == sorted(expected)
        for console in (narrow_a, narrow_b):
            await console.events_with(in_area)
            await console.drain()
            assert sorted(event_id(f) for f in console.frames) == sorted(in_area)
        positions = dict(on_a.positions)
        got_on_a = [event_id(f) for f in on_a.frames]
    # Gateway A is gone; the console resumes on a new gateway where it left off.
    async with gateway_process(env, "gw-c") as c:
        await produce(env.kafka, topics.sa, *records[30:])
        async with Console.connect(c, env.token(), ("sa",), positions=positions) as moved:
            got = got_on_a + await moved.events_with({f"e-{i}" for i in range(30, 60)})
            await moved.drain()
            got = got_on_a + [event_id(f) for f in moved.frames]
    assert sorted(got) == sorted(f"e-{i}" for i in range(60))


async def test_status_and_directives_resume_too(env: Env, topics: TopicNames) -> None:
    # Partitions of streams with no events yet still get a position in `subscribed`.
    async with gateway(env) as gw, Console.connect(gw.port, env.token()) as console:
        for topic in (topics.approved, topics.decisions, topics.status):
            assert any(k.startswith(topic + "/") for k in console.positions), topic


async def test_a_console_whose_units_a_new_policy_moves_away_is_closed(env: Env) -> None:
    """The unit subtree is checked again at every policy switch: JFC-BRUNSSUM's console that
    follows MNC-NE is closed (4009) once a version puts MNC-NE under SHAPE directly, and may
    not subscribe to it again; its console following its own subtree stays."""
    await publish_reference_policy(env)
    token = env.token(unit="JFC-BRUNSSUM")
    async with (
        gateway(env) as gw,
        Console.connect(gw.port, token, ("directives",), units="MNC-NE") as follower,
        Console.connect(gw.port, token, ("directives",)) as own,
    ):
        doc = yaml.safe_load(REFERENCE_POLICY.read_text())
        doc["version"] = 2
        for unit in doc["units"]:
            if unit["id"] == "MNC-NE":
                unit["parent"] = "SHAPE"
        v2 = load_policy_document(yaml.safe_dump(doc).encode())
        await publish(env.kafka, TopicNames(env.prefix).policy, v2, 1, "urn:test")
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(20):
                while True:
                    await follower.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4009
        await own.ws.send(json.dumps({"op": "ping", "id": "p"}))
        assert (await own.reply_to("p", ("pong",)))["op"] == "pong"
        async with Console.connect(gw.port, token, ("directives",), wait_live=False) as again:
            await again.ws.send(
                json.dumps(
                    {"op": "subscribe", "id": "s2", "streams": ["directives"], "units": "MNC-NE"}
                )
            )
            assert (await again.reply_to("s2", ("error",)))["code"] == "forbidden"


async def test_one_unit_cannot_take_another_units_next_directive_id(env: Env) -> None:
    """Ids are scoped to their issuer: JFC-BRUNSSUM submitting the id MNC-NE is about to use
    takes nothing from MNC-NE, whose directive is then decided on its merits, not denied as
    a replay."""
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {
        "kind": "MOVE",
        "target": "POL-12BDE",
        "expires": expires,
        "area": [
            {"lat": 55.0, "lon": 15.0},
            {"lat": 55.0, "lon": 16.0},
            {"lat": 55.5, "lon": 15.5},
        ],
    }

    def submit(correlation: str, directive_id: str) -> str:
        return json.dumps(
            {
                "op": "submit",
                "id": correlation,
                "directive": body,
                "classification": "NATO SECRET",
                "releasableto": "NATO",
                "directive_id": directive_id,
            }
        )

    commander = ("console", "commander")
    async with (
        enforcer(env),
        gateway(env) as gw,
        Console.connect(gw.port, env.token(unit="MNC-NE", roles=commander)) as corps,
        Console.connect(gw.port, env.token(unit="JFC-BRUNSSUM", roles=commander)) as other,
    ):
        await other.ws.send(submit("o1", "order-7"))
        taken = await other.reply_to("o1", ("submitted", "error"))
        assert taken["directive_id"] == "JFC-BRUNSSUM~order-7"
        await corps.ws.send(submit("c1", "order-7"))
        mine = await corps.reply_to("c1", ("submitted", "error"))
        assert mine["directive_id"] == "MNC-NE~order-7"
        decided = await corps.events_until(
            lambda f: (
                f["stream"] == "decisions"
                and f["event"]["data"]["directive_id"] == "MNC-NE~order-7"
            )
        )
        verdict = decided[-1]["event"]["data"]
        assert verdict["verdict"] == "ALLOW", verdict
        await corps.ws.send(submit("c2", "MNC-NE~order-7"))  # the same again: a replay
        again = await corps.reply_to("c2", ("submitted", "error"))
        assert again["directive_id"] == "MNC-NE~order-7"
