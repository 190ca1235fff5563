"""The ingest and the policy API against their own OpenAPI documents, on real sockets and
real Kafka: Schemathesis (from PyPI, its command line unmodified) runs every phase
(examples, coverage, fuzzing, stateful) against each service, with a token of each role
(see ``INGEST_ROLES``), and checks that no request gets a 5xx and every response has a
documented status code, content type, headers and body schema.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.services.policy_api.app import PolicyApi
from tests.integration.services import Env, ingest, publish_reference_policy, running

ST = Path(sys.executable).with_name("st")
#: examples per operation and phase: enough to reach every documented answer, and quick
EXAMPLES = os.environ.get("C2BUS_SCHEMATHESIS_EXAMPLES", "10")
#: The checks that judge a response against the document. Of Schemathesis's others:
#: positive_data_acceptance and negative_data_rejection read "schema-valid" as "must be
#: accepted" and "schema-invalid" as "must be refused", but the services refuse
#: schema-valid requests for reasons no schema can carry (a directive for another unit:
#: 403; a policy whose chain of command has a cycle: 422), and a body's schema here is the
#: published event schema, which the services enforce exactly (ingest's 422 tests);
#: ignored_auth, use_after_free, ensure_resource_availability and object_level_authorization
#: need resources created and deleted through the API, which these APIs do not offer
#: (authentication has tests of its own).
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "missing_required_header",
        "unsupported_method",
    )
)


def bearer(env: Env, roles: tuple[str, ...]) -> str:
    identity = Identity(
        f"st-{'-'.join(roles) or 'none'}",
        "DEU",
        Classification.COSMIC_TOP_SECRET,
        "JFC-BRUNSSUM",
        frozenset(roles),
    )
    return env.mint(identity, ttl_s=3600)


async def schemathesis(port: int, token: str, tmp_path: Path) -> tuple[int, str]:
    """Run Schemathesis against the service on ``port``; its exit code and output."""
    process = await asyncio.create_subprocess_exec(
        str(ST),
        "run",
        f"http://127.0.0.1:{port}/openapi.json",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--checks",
        CHECKS,
        "--max-examples",
        EXAMPLES,
        "--header",
        f"Authorization: Bearer {token}",
        "--generation-database",
        "none",
        "--report-dir",
        str(tmp_path),
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("C2BUS_")},
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


INGEST_ROLES = [
    (),
    ("sa-publisher",),
    ("directive-publisher",),
    ("approver",),
    ("red-card-holder",),
    ("sa-publisher", "directive-publisher", "approver"),
]
POLICY_ROLES = [(), ("policy-reader",), ("policy-admin",)]
#: Each run takes one to three minutes (Schemathesis generating on two cores), so
#: ``make test`` runs each service with no role and with every role it has; set
#: C2BUS_SCHEMATHESIS_ALL_ROLES=1 for every role alone too (about 17 minutes).
if os.environ.get("C2BUS_SCHEMATHESIS_ALL_ROLES") != "1":
    INGEST_ROLES = [INGEST_ROLES[0], INGEST_ROLES[-1]]
    POLICY_ROLES = [POLICY_ROLES[0], POLICY_ROLES[-1]]


@pytest.mark.parametrize("roles", INGEST_ROLES, ids=lambda r: "+".join(r) or "no-role")
async def test_the_ingest_answers_as_its_openapi_document_says(
    env: Env, roles: tuple[str, ...], tmp_path: Path
) -> None:
    async with ingest(env) as service:
        code, output = await schemathesis(service.http.port, bearer(env, roles), tmp_path)
    assert code == 0, output


@pytest.mark.parametrize("roles", POLICY_ROLES, ids=lambda r: "+".join(r) or "no-role")
async def test_the_policy_api_answers_as_its_openapi_document_says(
    env: Env, roles: tuple[str, ...], tmp_path: Path
) -> None:
    await publish_reference_policy(env)
    service = PolicyApi(env.settings("policy_api"), env.verifier())
    async with running(service, lambda: service.ready):
        code, output = await schemathesis(service.http.port, bearer(env, roles), tmp_path)
    assert code == 0, output
