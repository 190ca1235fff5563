"""Held directives: HOLD until the policy's approvals arrive, across an enforcer restart;
denied when they expire; approvals for nothing held are dead-lettered."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from c2bus.adapters.dlq import PREFIX
from c2bus.adapters.signing import APPROVALS
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import decode_event, encode_event
from c2bus.core.events import ApprovalData, ApprovalEvent, DecisionEvent, DirectiveEvent
from c2bus.core.labels import Classification
from tests.integration.services import Console, Env, enforcer, eventually, gateway, ingest
from tests.integration.test_pipeline import produce
from tests.integration.test_roundtrip import read_all

AT_SEA = [{"lat": 55.0, "lon": 15.0}, {"lat": 55.0, "lon": 16.0}, {"lat": 55.5, "lon": 15.5}]


def engage(valid_example: Any, directive_id: str, expires: datetime) -> bytes:
    doc = valid_example("directive")
    doc["id"] = directive_id
    doc["time"] = datetime.now(UTC).isoformat()
    doc["data"].update(
        kind="ENGAGE", issuer="MNC-NE", target="POL-12BDE", area=AT_SEA, expires=expires.isoformat()
    )
    doc["data"].pop("valid_from")
    return json.dumps(doc).encode()


def approval(directive_id: str, approver: str, roles: list[str]) -> bytes:
    event = ApprovalEvent(
        specversion="1.0",
        id=f"approval:{directive_id}:{approver}",
        source="urn:test",
        time=datetime.now(UTC),
        classification=Classification.NATO_SECRET,
        releasableto="NATO",
        data=ApprovalData(
            directive_id=directive_id,
            target="POL-12BDE",
            approver=approver,
            nation="GBR",
            roles=roles,
            clearance=Classification.NATO_SECRET,
        ),
    )
    return encode_event(event)


def attested(env: Env, value: bytes) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """An approval record as the ingest writes it: attested with its key."""
    return b"POL-12BDE", value, env.signing.signer("ingest").headers(APPROVALS, value)


async def records_eventually(env: Env, topic: str) -> list[Any]:
    async with asyncio.timeout(30):
        while True:
            records = await read_all(env.kafka, topic)
            if records:
                return records
            await asyncio.sleep(0.3)


async def decisions_for(env: Env, topics: TopicNames, directive_id: str, count: int) -> list[Any]:
    async with asyncio.timeout(40):
        while True:
            found = []
            for record in await read_all(env.kafka, topics.decisions):
                event = decode_event(record.value)
                assert isinstance(event, DecisionEvent)
                if event.data.directive_id == directive_id:
                    found.append(event)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.3)


async def test_released_after_two_approvals_across_a_restart(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    far = datetime.now(UTC) + timedelta(hours=2)
    async with enforcer(env):
        await produce(
            env.kafka, topics.submitted, (b"POL-12BDE", engage(valid_example, "d-engage", far))
        )
        [held] = await decisions_for(env, topics, "d-engage", 1)
        assert held.data.verdict.value == "HOLD"
        assert held.id == "decision:d-engage:hold:0"
        assert [r.rule for r in held.data.reasons] == ["approval.two-person"]
        # One approver, one without the approver role, and one no edge attested (written
        # straight to Kafka with a stolen credential): still held.
        await produce(
            env.kafka,
            topics.submitted,
            attested(env, approval("d-engage", "alice", ["approver"])),
            attested(env, approval("d-engage", "mallory", ["console"])),
            (b"POL-12BDE", approval("d-engage", "eve", ["approver"])),
        )
        steps = await decisions_for(env, topics, "d-engage", 3)
        assert [d.data.verdict.value for d in steps] == ["HOLD", "HOLD", "HOLD"]
        [forged] = await records_eventually(env, topics.dlq)
        fields = {k: v.decode() for k, v in forged.headers}
        assert fields[PREFIX + "stage"] == "enforcer.approval"
        assert fields[PREFIX + "exception.class.name"] == "UnverifiedRecord"
        assert fields[PREFIX + "exception.message"].startswith("unsigned")
    assert await read_all(env.kafka, topics.approved) == []

    # A new enforcer instance restores the held directive from Kafka.
    async with enforcer(env, publish_policy=False) as second:
        # Ready means subscribed; the held state is restored once the partition is assigned.
        await eventually(lambda: second.held.get("d-engage") is not None)
        assert {a.approver for a in second.held.get("d-engage").approvals} == {"alice", "mallory"}
        await produce(
            env.kafka,
            topics.submitted,
            attested(env, approval("d-engage", "bob", ["approver"])),
        )
        final = (await decisions_for(env, topics, "d-engage", 4))[-1]
        assert final.data.verdict.value == "ALLOW"
        assert final.id == "decision:d-engage"
    [released] = await read_all(env.kafka, topics.approved)
    event = decode_event(released.value)
    assert isinstance(event, DirectiveEvent)
    assert (event.id, event.decisionid) == ("d-engage", "decision:d-engage")
    held_log = await read_all(env.kafka, topics.held)
    entries = [r for r in held_log if r.key == b"d-engage"]
    assert entries[-1].value is None  # resolved: tombstoned
    assert any(r.key == b"seen:d-engage" and r.value for r in held_log)  # replay protection


async def test_a_held_directive_is_denied_when_it_expires(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=4)
    async with enforcer(env) as service:
        await produce(
            env.kafka, topics.submitted, (b"POL-12BDE", engage(valid_example, "d-brief", soon))
        )
        held, denied = await decisions_for(env, topics, "d-brief", 2)
        assert held.data.verdict.value == "HOLD"
        assert denied.data.verdict.value == "DENY"
        assert "validity.expired" in [r.rule for r in denied.data.reasons]
        assert service.held.get("d-brief") is None


async def test_approvals_via_ingest_and_for_nothing_held(env: Env, topics: TopicNames) -> None:
    async with (
        enforcer(env),
        ingest(env) as api,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.http.port}") as http,
    ):
        token = env.token(unit="SHAPE", nation="GBR", roles=("approver",))
        console_only = env.token(unit="SHAPE", nation="GBR", roles=("console",))
        body = {"directive_id": "d-nothing", "target": "POL-12BDE"}
        refused = await http.post(
            "/v1/approvals", json=body, headers={"Authorization": f"Bearer {console_only}"}
        )
        assert refused.status_code == 403
        sent = await http.post(
            "/v1/approvals", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert sent.status_code == 202, sent.text
        letters = await records_eventually(env, topics.dlq)
    headers = {k: v.decode() for k, v in letters[0].headers}
    assert headers[PREFIX + "stage"] == "enforcer.approval"
    assert "d-nothing is not held" in headers[PREFIX + "exception.message"]
    stamped = decode_event(letters[0].value)
    assert isinstance(stamped, ApprovalEvent)
    assert (stamped.data.approver, stamped.data.nation) == ("test-shape", "GBR")  # from the token


async def test_approvals_from_consoles_release_a_held_directive_and_forged_ones_do_not(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    """Approvers approve through the gateway, which attests who they are; an approval
    written with the gateway's own Kafka credential but not signed counts for nothing, and a
    console without an approver role is refused."""
    far = datetime.now(UTC) + timedelta(hours=2)
    async with enforcer(env), gateway(env) as gw:
        await produce(
            env.kafka, topics.submitted, (b"POL-12BDE", engage(valid_example, "d-console", far))
        )
        [held] = await decisions_for(env, topics, "d-console", 1)
        assert held.data.verdict.value == "HOLD"

        async def approve(token: str, correlation: str) -> dict[str, Any]:
            async with Console.connect(gw.port, token, ("decisions",)) as console:
                await console.ws.send(
                    json.dumps(
                        {
                            "op": "approve",
                            "id": correlation,
                            "directive_id": "d-console",
                            "target": "POL-12BDE",
                            "classification": "NATO SECRET",
                            "releasableto": "NATO",
                            "comment": "concur",
                        }
                    )
                )
                return await console.reply_to(correlation, ("approval", "error"))

        refused = await approve(env.token(unit="SHAPE", nation="GBR"), "no-role")
        assert (refused["op"], refused["code"]) == ("error", "forbidden")

        # eve holds the gateway's Kafka credential, not its signing key
        as_gateway = env.as_principal("gateway")
        await produce(
            as_gateway, topics.submitted, (b"POL-12BDE", approval("d-console", "eve", ["approver"]))
        )
        [forged] = await records_eventually(env, topics.dlq)
        fields = {k: v.decode() for k, v in forged.headers}
        assert fields[PREFIX + "stage"] == "enforcer.approval"
        assert fields[PREFIX + "exception.class.name"] == "UnverifiedRecord"

        first = await approve(env.token(unit="SHAPE", nation="GBR", roles=("approver",)), "a1")
        assert (first["op"], first["directive_id"]) == ("approval", "d-console")
        await decisions_for(env, topics, "d-console", 2)  # counted, still one short
        second = await approve(
            env.token(unit="JFC-BRUNSSUM", nation="NLD", roles=("approver",)),
            "a2",
        )
        assert second["op"] == "approval", second
        final = (await decisions_for(env, topics, "d-console", 3))[-1]
    assert final.data.verdict.value == "ALLOW"
    [released] = await read_all(env.kafka, topics.approved)
    assert decode_event(released.value).id == "d-console"
    counted = [
        decode_event(r.value)
        for r in await read_all(env.kafka, topics.submitted)
        if dict(r.headers).get("c2bus_kid") == env.signing.signer("gateway").kid.encode()
    ]
    assert sorted(e.data.approver for e in counted if isinstance(e, ApprovalEvent)) == [
        "test-jfc-brunssum",
        "test-shape",
    ]
