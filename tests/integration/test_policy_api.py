"""The policy API on a real socket: validate with every problem located, publish only as
policy-admin with optimistic concurrency, dry-run one directive, shadow-run a candidate
against the directives recorded on Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import yaml

from c2bus.adapters.policy_store import history
from c2bus.adapters.topics import TopicNames
from c2bus.services.policy_api.app import PolicyApi
from tests.integration.services import REFERENCE_POLICY, Env, publish_reference_policy, running
from tests.integration.test_pipeline import directive, produce


@contextlib.asynccontextmanager
async def api(env: Env, roles: tuple[str, ...]) -> AsyncIterator[httpx.AsyncClient]:
    service = PolicyApi(env.settings("policy_api"), env.verifier())
    async with running(service, lambda: service.ready):
        token = env.token(unit="SHAPE", roles=roles)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{service.http.port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as client:
            yield client


def reference_without_polish_transfer() -> bytes:
    doc = yaml.safe_load(REFERENCE_POLICY.read_text())
    doc["version"] = 2
    doc["transfers"] = [t for t in doc["transfers"] if t["id"] != "toa-pol-12"]
    return yaml.safe_dump(doc).encode()


async def test_validate_publish_and_show(env: Env) -> None:
    await publish_reference_policy(env)
    async with api(env, ("console",)) as reader:
        bad = yaml.safe_load(REFERENCE_POLICY.read_text())
        bad["units"][5]["parent"] = "NOWHERE"
        bad["caveats"][2]["forbidden_kinds"] = ["TELEPORT"]
        refused = await reader.post("/v1/policies/validate", content=yaml.safe_dump(bad))
        assert refused.status_code == 422
        assert {p["pointer"] for p in refused.json()["problems"]} == {
            "/units/5/parent",
            "/caveats/2/forbidden_kinds/0",
        }
        huge = await reader.post("/v1/policies/validate", content=b"#" * (2 << 20))
        assert huge.status_code == 413, huge.text
        bomb = b"a: &a [x, x, x, x, x, x, x, x]\n" + b"".join(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 8)}]\n".encode()
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        refused_bomb = await reader.post("/v1/policies/validate", content=bomb)
        assert refused_bomb.status_code == 422, refused_bomb.text  # at once, nothing expanded
        assert "anchors and aliases" in refused_bomb.json()["problems"][0]["message"]
        ok = await reader.post("/v1/policies/validate", content=REFERENCE_POLICY.read_bytes())
        assert ok.json()["valid"] is True
        forbidden = await reader.post(
            "/v1/policies/alliance-main/versions?replaces=1",
            content=reference_without_polish_transfer(),
        )
        assert forbidden.status_code == 403
        assert (await reader.get("/v1/policies")).json()[0]["version"] == 1
        assert (await reader.get("/v1/policies/nothing")).status_code == 404

    async with api(env, ("policy-admin",)) as admin:
        stale = await admin.post(
            "/v1/policies/alliance-main/versions?replaces=0",
            content=reference_without_polish_transfer(),
        )
        assert stale.status_code == 409
        pushed = await admin.post(
            "/v1/policies/alliance-main/versions?replaces=1",
            content=reference_without_polish_transfer(),
        )
        assert pushed.status_code == 201, pushed.text
        shown = (await admin.get("/v1/policies/alliance-main")).json()
        assert (shown["version"], shown["replaces"]) == (2, 1)
        assert "toa-pol-12" not in {t["id"] for t in shown["document"]["transfers"]}
        history = (await admin.get("/v1/policies/alliance-main/history")).json()
        assert [(v["version"], v["replaces"]) for v in history] == [(1, None), (2, 1)]
        assert history[1]["source"] == "urn:c2bus:policy-api:test-shape"


async def test_dry_run_and_shadow(env: Env, topics: TopicNames, valid_example: Any) -> None:
    await publish_reference_policy(env)
    await produce(
        env.kafka,
        topics.submitted,
        (b"POL-12BDE", directive(valid_example, "s-pol", "MNC-NE", "POL-12BDE")),
        (b"DEU-PZBRIG-41", directive(valid_example, "s-deu", "MNC-NE", "DEU-PZBRIG-41")),
    )
    async with api(env, ("console",)) as client:
        one = json.loads(directive(valid_example, "s-pol", "MNC-NE", "POL-12BDE"))
        now = await client.post("/v1/policies/alliance-main/dry-run", json={"directive": one})
        assert now.json()["verdict"] == "ALLOW"
        candidate = yaml.safe_load(reference_without_polish_transfer())
        later = await client.post(
            "/v1/policies/alliance-main/dry-run",
            json={"directive": one, "policy": candidate},
        )
        assert later.json()["verdict"] == "DENY"
        assert later.json()["policy_version"] == 2

        report = await client.post(
            "/v1/policies/alliance-main/shadow?last=100",
            content=reference_without_polish_transfer(),
        )
        assert report.status_code == 200, report.text
        body = report.json()
        assert body["directives"] == 2
        assert (body["current_version"], body["candidate_version"]) == (1, 2)
        [change] = body["changed"]
        assert (change["directive_id"], change["current"], change["candidate"]) == (
            "s-pol",
            "ALLOW",
            "DENY",
        )
        assert change["candidate_rules"] == ["authority.none"]


async def test_racing_publishers_cannot_both_win(env: Env, topics: TopicNames) -> None:
    """Five admins publish a version 2 over version 1 at the same moment, each with its own
    document: exactly one gets 201, every other 409, and only the winner's document is in
    force and in the history."""
    await publish_reference_policy(env)
    async with api(env, ("policy-admin",)) as admin:

        def candidate(n: int) -> bytes:
            doc = yaml.safe_load(REFERENCE_POLICY.read_text())
            doc["version"] = 2
            doc["description"] = f"candidate {n}"
            return yaml.safe_dump(doc).encode()

        answers = await asyncio.gather(
            *(
                admin.post("/v1/policies/alliance-main/versions?replaces=1", content=candidate(n))
                for n in range(5)
            )
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [201, 409, 409, 409, 409], [a.text for a in answers]
        [winner] = [n for n, a in enumerate(answers) if a.status_code == 201]
        shown = (await admin.get("/v1/policies/alliance-main")).json()
        assert shown["version"] == 2
        assert shown["document"]["description"] == f"candidate {winner}"
    versions = await history(env.kafka, topics.policy, "alliance-main")
    assert [v.data.version for v in versions] == [1, 2]
    assert versions[1].data.document.description == f"candidate {winner}"
