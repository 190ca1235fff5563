"""HTTP ingest on a real socket: valid events produced keyed by entity or target, invalid
ones refused with every problem listed, batches all or nothing, callers authorised."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import decode_event
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.services.ingest.app import Ingest
from tests.integration.services import Env, ingest, running
from tests.integration.test_roundtrip import read_all


def publisher(env: Env, *roles: str) -> dict[str, str]:
    """A JFC's token that also acts for POL-12BDE (issues directives and reports SA for it)."""
    identity = Identity(
        "test-jfc", "DEU", Classification.COSMIC_TOP_SECRET, "JFC-BRUNSSUM",
        frozenset(roles), acts_for=frozenset({"POL-12BDE"}),
    )  # fmt: skip
    return {"Authorization": f"Bearer {env.mint(identity, ttl_s=600)}"}


async def test_publish_single_and_batch(env: Env, topics: TopicNames, valid_example: Any) -> None:
    track = valid_example("sa-track")
    status = valid_example("sa-unit-status")
    directive = valid_example("directive")
    async with (
        ingest(env) as service,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{service.http.port}",
            headers=publisher(env, "sa-publisher", "directive-publisher"),
        ) as http,
    ):
        one = await http.post("/v1/sa", json=track)
        assert one.status_code == 202, one.text
        assert one.json()["topic"] == topics.sa
        batch = await http.post("/v1/sa/batch", json=[track | {"id": "t-2"}, status])
        assert batch.status_code == 202, batch.text
        assert [r["id"] for r in batch.json()] == ["t-2", status["id"]]
        sent = await http.post("/v1/directives", json=directive)
        assert sent.status_code == 202, sent.text

    sa = await read_all(env.kafka, topics.sa)
    # a track is its publisher's unit's; the status is of a unit the token reports for
    assert sorted(r.key for r in sa) == [
        b"JFC-BRUNSSUM~TRK-4711",
        b"JFC-BRUNSSUM~TRK-4711",
        b"POL-12BDE",
    ]
    [submitted] = await read_all(env.kafka, topics.submitted)
    assert submitted.key == b"NLD-11AMB"  # keyed by target unit
    assert decode_event(submitted.value).id == f"JFC-BRUNSSUM~{directive['id']}"  # its issuer's


async def test_invalid_bodies_list_every_problem(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    bad = copy.deepcopy(valid_example("sa-track"))
    del bad["classification"]
    bad["data"]["position"]["lat"] = 123.0
    bad["time"] = "soon"
    good = valid_example("sa-track")
    async with (
        ingest(env) as service,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{service.http.port}",
            headers=publisher(env, "sa-publisher", "approver"),
        ) as http,
    ):
        single = await http.post("/v1/sa", json=bad)
        assert single.status_code == 422
        problems = {(p["path"], p["message"]) for p in single.json()["problems"]}
        paths = {path for path, _ in problems}
        assert {"$", "$.data.position.lat", "$.time"} <= paths, problems
        assert any("classification" in message for _, message in problems)

        batch = await http.post("/v1/sa/batch", json=[good, bad])
        assert batch.status_code == 422
        assert {p["index"] for p in batch.json()["problems"]} == {1}

        garbage = await http.post("/v1/sa", content=b"{nope")
        assert garbage.status_code == 422
        assert garbage.json()["problems"][0]["message"].startswith("malformed JSON")

        deep = b"[" * 10_000 + b"]" * 10_000  # ~20 kB
        not_utf8 = json.dumps(good).encode().replace(b'"id": "', b'"id": "\xf1', 1)
        for body in (
            deep,
            b'{"type": {}}',
            b'{"type": "c2bus.sa.track.v1", "data": ' + deep + b"}",
            not_utf8,  # JSON whose string is not UTF-8
            b'{"directive_id": "\xf1", "target": "POL-12BDE"}',
        ):
            for route in ("/v1/sa", "/v1/sa/batch", "/v1/approvals"):
                answer = await http.post(route, content=body)
                assert answer.status_code == 422, (route, answer.text)  # never a 500
        assert (await http.post("/v1/sa", content=deep)).json()["problems"] == [
            {"path": "$", "message": "nested too deeply to be an event"}
        ]

        async def streamed(size: int) -> AsyncIterator[bytes]:  # no declared length
            for _ in range(size // 65_536):
                yield b" " * 65_536

        for route, size in (
            ("/v1/sa", 5 << 20),
            ("/v1/sa/batch", 5 << 20),
            ("/v1/approvals", 128 << 10),
        ):
            too_big = await http.post(route, content=streamed(size))
            assert too_big.status_code == 413, (route, too_big.text)
            declared = await http.post(route, content=b" " * size)
            assert declared.status_code == 413, (route, declared.text)

        tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        ahead = await http.post("/v1/sa/batch", json=[good, good | {"time": tomorrow}])
        assert ahead.status_code == 422, ahead.text
        [problem] = ahead.json()["problems"]
        assert (problem["path"], problem["index"]) == ("$.time", 1)
        assert "ahead of this clock" in problem["message"]

        wrong_kind = await http.post("/v1/sa", json=valid_example("directive"))
        assert wrong_kind.status_code == 422
        assert wrong_kind.json()["problems"][0]["path"] == "$.type"

    assert await read_all(env.kafka, topics.sa) == []  # nothing produced, not even `good`


async def test_callers_must_be_authorised(env: Env, valid_example: Any) -> None:
    async with (
        ingest(env) as service,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as http,
    ):
        anonymous = await http.post("/v1/sa", json=valid_example("sa-track"))
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        sa_only = publisher(env, "sa-publisher")
        forbidden = await http.post(
            "/v1/directives", json=valid_example("directive"), headers=sa_only
        )
        assert forbidden.status_code == 403
        assert "directive-publisher" in forbidden.json()["detail"]


async def test_openapi_and_ops_endpoints(env: Env) -> None:
    async with (
        ingest(env) as service,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as http,
    ):
        assert (await http.get("/docs")).status_code == 200
        spec = (await http.get("/openapi.json")).json()
        assert {"/v1/sa", "/v1/sa/batch", "/v1/directives", "/v1/directives/batch"} <= set(
            spec["paths"]
        )
        body = spec["paths"]["/v1/directives"]["post"]["requestBody"]["content"]
        assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/DirectiveEvent"}
        assert "DirectiveEvent" in spec["components"]["schemas"]
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        assert "c2bus_ingest_accepted" in (await http.get("/metrics")).text


async def test_a_directive_is_issued_by_the_tokens_unit_within_what_it_may_see(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    """The issuer, the label and the issuing subject come from the token, not the body: a
    brigade cleared NATO UNCLASSIFIED cannot post a COSMIC TOP SECRET directive "from SHAPE",
    nor one of its own above its clearance; the decision id is the enforcer's to set."""
    directive = valid_example("directive")  # JFC-BRUNSSUM to NLD-11AMB, NATO SECRET / NATO

    def bearer(identity: Identity) -> dict[str, str]:
        token = env.mint(identity, ttl_s=600)
        return {"Authorization": f"Bearer {token}"}

    roles = frozenset({"directive-publisher"})
    brigade = bearer(
        Identity("pol-ops", "POL", Classification.NATO_UNCLASSIFIED, "POL-12BDE", roles)
    )
    jfc = bearer(Identity("jfc-ops", "DEU", Classification.NATO_SECRET, "JFC-BRUNSSUM", roles))
    bridge = bearer(
        Identity(
            "bridge", "DEU", Classification.NATO_SECRET, "C2-BRIDGE", roles,
            acts_for=frozenset({"JFC-BRUNSSUM"}),
        )
    )  # fmt: skip
    forged = copy.deepcopy(directive) | {"classification": "COSMIC TOP SECRET"}
    forged["data"]["issuer"] = "SHAPE"
    own_but_secret = copy.deepcopy(directive)
    own_but_secret["data"]["issuer"] = "POL-12BDE"
    decided = directive | {"decisionid": "decision:forged"}
    async with (
        ingest(env) as service,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as http,
    ):
        as_shape = await http.post("/v1/directives", json=forged, headers=brigade)
        assert as_shape.status_code == 403, as_shape.text
        assert "may issue directives for POL-12BDE only" in as_shape.json()["detail"]
        above = await http.post("/v1/directives", json=own_but_secret, headers=brigade)
        assert above.status_code == 403, above.text
        assert "above what its issuer may see" in above.json()["detail"]
        batch = await http.post("/v1/directives/batch", json=[directive, forged], headers=jfc)
        assert batch.status_code == 403, batch.text  # all or nothing
        with_decision = await http.post("/v1/directives", json=decided, headers=jfc)
        assert with_decision.status_code == 422, with_decision.text
        assert with_decision.json()["problems"][0]["path"] == "$.decisionid"
        stamped = directive | {"decidedat": "2026-12-02T08:00:00Z"}
        with_time = await http.post("/v1/directives", json=stamped, headers=jfc)
        assert with_time.status_code == 422, with_time.text
        assert with_time.json()["problems"][0]["path"] == "$.decidedat"
        sent = await http.post("/v1/directives", json=directive, headers=jfc)
        assert sent.status_code == 202, sent.text
        assert sent.json()["id"] == f"JFC-BRUNSSUM~{directive['id']}"  # the id it is known by
        relayed = directive | {"id": "d-bridged"}
        assert (await http.post("/v1/directives", json=relayed, headers=bridge)).status_code == 202

    submitted = [decode_event(r.value) for r in await read_all(env.kafka, topics.submitted)]
    assert [(e.id, e.subject) for e in submitted] == [
        # the id is scoped to its issuer; the issuing subject is the token's
        (f"JFC-BRUNSSUM~{directive['id']}", "jfc-ops"),
        ("JFC-BRUNSSUM~d-bridged", "bridge"),
    ]


async def test_an_sa_publisher_writes_only_its_own_entities(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    """A sensor's tracks live in its unit's namespace (``<unit>~<track>``), so another
    publisher's track of the same name is a different entity, never an overwrite; a
    publisher cannot name a track in another unit's namespace, nor report the position or
    status of a unit it does not report for."""
    track = valid_example("sa-track")  # TRK-4711
    position = valid_example("sa-position")  # DEU-PZGRENBTL-122
    status = valid_example("sa-unit-status")  # POL-12BDE
    roles = frozenset({"sa-publisher"})
    top = Classification.COSMIC_TOP_SECRET

    def bearer(identity: Identity) -> dict[str, str]:
        return {"Authorization": f"Bearer {env.mint(identity, ttl_s=600)}"}

    german = bearer(Identity("radar-a", "DEU", top, "DEU-PZGRENBTL-122", roles))
    polish = bearer(Identity("radar-b", "POL", top, "POL-12BDE", roles))
    relay = bearer(
        Identity("bft", "DEU", top, "C2-BRIDGE", roles, acts_for=frozenset({"POL-12BDE"}))
    )
    async with (
        ingest(env) as service,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}") as http,
    ):
        mine = await http.post("/v1/sa", json=track, headers=german)
        assert mine.status_code == 202, mine.text
        same_name = await http.post("/v1/sa", json=track | {"id": "t-pol"}, headers=polish)
        assert same_name.status_code == 202, same_name.text
        again = track | {"id": "t-again"}
        again["data"] = track["data"] | {"track_id": "DEU-PZGRENBTL-122~TRK-4711"}
        theirs = await http.post("/v1/sa", json=again, headers=polish)
        assert theirs.status_code == 403, theirs.text
        assert "POL-12BDE~" in theirs.json()["detail"]
        own_again = await http.post("/v1/sa", json=again, headers=german)  # already scoped
        assert own_again.status_code == 202, own_again.text
        foreign = await http.post("/v1/sa/batch", json=[status, position], headers=polish)
        assert foreign.status_code == 403, foreign.text  # all or nothing
        assert "may report for POL-12BDE only" in foreign.json()["detail"]
        assert (await http.post("/v1/sa", json=status, headers=polish)).status_code == 202
        assert (await http.post("/v1/sa", json=position, headers=german)).status_code == 202
        relayed = status | {"id": "st-relayed"}
        assert (await http.post("/v1/sa", json=relayed, headers=relay)).status_code == 202

    produced = [(r.key, decode_event(r.value).id) for r in await read_all(env.kafka, topics.sa)]
    assert sorted(produced) == sorted(
        [
            (b"DEU-PZGRENBTL-122~TRK-4711", track["id"]),
            (b"POL-12BDE~TRK-4711", "t-pol"),
            (b"DEU-PZGRENBTL-122~TRK-4711", "t-again"),
            (b"POL-12BDE", status["id"]),
            (b"DEU-PZGRENBTL-122", position["id"]),
            (b"POL-12BDE", "st-relayed"),
        ]
    )


async def test_a_client_trickling_its_request_head_is_disconnected(env: Env) -> None:
    """Fifty connections that never finish their headers are closed once the head timeout
    passes, and the ingest answers everyone else meanwhile."""
    service = Ingest(env.settings("ingest", C2BUS_HTTP_HEAD_TIMEOUT_S="1"), env.verifier())
    async with running(service, lambda: service.producer is not None):
        port = service.http.port
        slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
        for _, writer in slow:
            writer.write(b"POST /v1/sa HTTP/1.1\r\nHost: ingest\r\nX-Slow: ")
            await writer.drain()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).status_code == 200
        async with asyncio.timeout(10):  # 1 s, and some slack on a busy machine
            closed = [await reader.read() for reader, _ in slow]
        assert closed == [b""] * 50  # closed by the server, not answered
        for _, writer in slow:
            writer.close()
