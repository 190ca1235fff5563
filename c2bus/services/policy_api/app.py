"""The policy API (FastAPI; OpenAPI at ``/docs``).

- ``POST /v1/policies/validate``: validate a document (YAML or JSON), every problem listed
- ``GET /v1/policies``: the version in force of every policy set
- ``GET /v1/policies/{set}``: that version's metadata and document
- ``GET /v1/policies/{set}/history``: every version ever published
- ``POST /v1/policies/{set}/versions?replaces=N``: publish the next version (policy-admin)
- ``POST /v1/policies/{set}/dry-run``: decide one directive, publish nothing
- ``POST /v1/policies/{set}/shadow?last=N``: re-decide recorded directives under the body

Every call needs a valid bearer token; only ``policy-admin`` may publish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter

from c2bus.adapters.auth import TokenVerifier, authenticate, verifier_for
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.metrics import export_kafka_refusals
from c2bus.adapters.ops import (
    BODY_REFUSALS,
    HttpServer,
    json_response,
    ops_router,
    read_body,
    refusal,
    refusal_responses,
    with_bodies,
)
from c2bus.adapters.policy_store import (
    PolicyConflict,
    PolicyView,
    follow,
    publish,
    recorded_directives,
)
from c2bus.adapters.settings import ServiceSettings
from c2bus.adapters.topics import TopicNames
from c2bus.adapters.worker import Overrun, Worker
from c2bus.core.codec import MALFORMED, EventDecoder
from c2bus.core.decision import Approval, Decision
from c2bus.core.events import DirectiveEvent, PolicySetEvent
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.core.policy.compiler import PolicyIssue, content_hash
from c2bus.core.policy.model import PolicyDocument
from c2bus.errors import InvalidEvent, KafkaError, Refused
from c2bus.services.policy_api import work

log = logging.getLogger(__name__)
T = TypeVar("T")
ADMIN_ROLE = "policy-admin"
#: Reading policies (and validating, dry-running and shadow-running against them) needs
#: this role or the admin's, and clearance for the policy's label.
READER_ROLE = "policy-reader"
DIRECTIVES: EventDecoder[DirectiveEvent] = EventDecoder(DirectiveEvent)
MAX_SHADOW = 10_000
#: A policy document (the reference one is about 10 kB), or a dry run with one.
MAX_BODY_BYTES = 1024 * 1024


class ApprovalSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An approval to assume; its approver is taken as cleared for the directive's
    classification unless ``clearance`` says otherwise."""

    approver: str
    nation: str
    roles: list[str] = []
    clearance: Classification | None = None


class DryRun(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    directive: msgspec.Raw
    policy: PolicyDocument | None = None
    at: datetime | None = None
    approvals: list[ApprovalSpec] = []


#: What each refusal of the policy API means.
REFUSALS = BODY_REFUSALS | {
    403: f"The token lacks the role {READER_ROLE} or {ADMIN_ROLE} (publishing: {ADMIN_ROLE})",
    404: "No version of the policy set that the caller may see",
    409: "The version named in `replaces` is not the one in force",
    413: "Body over 1 MiB",
    422: "Invalid policy or request: every problem, with its JSON pointer; or working it "
    "out took longer than the time limit",
    503: "Kafka did not take the request",
}
PROBLEM = {
    "type": "object",
    "required": ["pointer", "message"],
    "properties": {"pointer": {"type": "string"}, "message": {"type": "string"}},
}
_STR, _INT = {"type": "string"}, {"type": "integer"}
_REPLACES = {"type": ["integer", "null"]}
VALID = {
    "type": "object",
    "required": ["valid", "policy_set_id", "version", "policy_hash"],
    "properties": {"valid": {"type": "boolean"}, "policy_set_id": _STR, "version": _INT,
                   "policy_hash": _STR},
}  # fmt: skip
VERSION = {
    "type": "object",
    "required": ["version", "published", "policy_hash"],
    "properties": {"policy_set_id": _STR, "version": _INT, "replaces": _REPLACES,
                   "published": _STR, "source": _STR, "policy_hash": _STR},
}  # fmt: skip
SHOWN = {
    "type": "object",
    "required": ["policy_set_id", "version", "published", "document"],
    "properties": {"policy_set_id": _STR, "version": _INT, "replaces": _REPLACES,
                   "published": _STR, "document": {"type": "object"}},
}  # fmt: skip
PUBLISHED = {
    "type": "object",
    "required": ["policy_set_id", "version"],
    "properties": {"policy_set_id": _STR, "version": _INT},
}
DRY_RUN = {
    "type": "object",
    "required": ["directive", "at", "verdict", "reasons", "policy_version", "policy_hash"],
    "properties": {"directive": _STR, "at": _STR, "verdict": {"enum": ["ALLOW", "DENY", "HOLD"]},
                   "reasons": {"type": "array"}, "policy_set_id": _STR, "policy_version": _INT,
                   "policy_hash": _STR},
}  # fmt: skip
SHADOW = {
    "type": "object",
    "required": ["directives", "not_shown", "changed"],
    "properties": {"directives": _INT, "not_shown": _INT, "current_version": _INT,
                   "candidate_version": _INT, "changed": {"type": "array"}},
}  # fmt: skip


def answers(
    body: dict[str, Any], *refusals: int, status: int = 200
) -> dict[int | str, dict[str, Any]]:
    """A route's documented answers: ``body`` on success, and ``refusals`` (statuses)."""
    return {
        status: json_response("Done", body),
        **refusal_responses({code: REFUSALS[code] for code in refusals}, PROBLEM),
    }


def _invalid(issues: list[PolicyIssue]) -> Refused:
    problems = [{"pointer": i.pointer, "message": i.message} for i in issues]
    return Refused("invalid", "invalid policy", problems=problems)


def _decision(decision: Decision) -> dict[str, Any]:
    return {
        "verdict": decision.verdict.value,
        "reasons": [{"rule": r.rule, "message": r.message} for r in decision.reasons],
        "policy_set_id": decision.policy_set_id,
        "policy_version": decision.policy_version,
        "policy_hash": decision.policy_hash,
    }


class PolicyApi:
    def __init__(self, settings: ServiceSettings, verifier: TokenVerifier) -> None:
        self.settings = settings
        self.verifier = verifier
        self.topics = TopicNames(settings.kafka.topic_prefix)
        self.registry = CollectorRegistry()
        export_kafka_refusals(self.registry)
        self.requests = Counter(
            "c2bus_policy_api_requests", "Requests", ["endpoint", "status"], registry=self.registry
        )
        self.ready = False
        #: the policy topics followed (read once from their start, then as they grow)
        self.view = PolicyView(self.topics.policy)
        #: where a caller's document is worked on, within the time limit
        self.worker = Worker("policy-api", settings.policy_api_time_limit_s)
        self.app = self._build()
        self.http = HttpServer(self.app, settings.host, settings.port, settings.http_head_timeout_s)

    # --- helpers --------------------------------------------------------------------------

    def _identity(self, request: Request) -> Identity:
        return authenticate(self.verifier, request.headers.get("authorization", ""))

    async def _work(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker process, refused (422) past the time limit."""
        try:
            return await self.worker.run(fn, *args)
        except Overrun as exc:
            log.warning("policy_api.overrun", extra={"work": fn.__name__, "error": str(exc)})
            raise Refused(
                "invalid",
                f"working this request out {exc}: a document or run this costly is not taken",
            ) from None

    async def _document(self, raw: bytes) -> PolicyDocument:
        result = await self._work(work.checked, raw)
        if isinstance(result, list):
            raise _invalid(result)
        return result

    def _current(self, set_id: str, identity: Identity) -> PolicyDocument:
        return self._visible(set_id, identity).data.document

    def _visible(self, set_id: str, identity: Identity) -> PolicySetEvent:
        """The version in force of ``set_id`` if the caller may see it; a caller who may not
        is told what they would be told of a set never published."""
        event = self.view.latest.get(set_id)
        if event is None or not identity.may_see(event.label):
            raise Refused("not_found", f"no version of {set_id} is published")
        return event

    async def _call(self, endpoint: str, request: Request, handler: Any) -> JSONResponse:
        try:
            identity = self._identity(request)
            if not (identity.has_role(READER_ROLE) or identity.has_role(ADMIN_ROLE)):
                raise Refused(
                    "forbidden", f"the policy API needs the role {READER_ROLE} or {ADMIN_ROLE}"
                )
            status, body = await handler(identity)
        except KafkaError as exc:
            log.error("policy_api.kafka_failed", extra={"endpoint": endpoint, "error": str(exc)})
            refused = Refused("unavailable", exc.for_caller("the request"))
            self.requests.labels(endpoint, str(refused.http_status)).inc()
            return refusal(refused)
        except Refused as exc:
            self.requests.labels(endpoint, str(exc.http_status)).inc()
            return refusal(exc)
        self.requests.labels(endpoint, str(status)).inc()
        return JSONResponse(body, status_code=status)

    # --- routes ---------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI(title="c2bus policy API", version="1", description=__doc__)
        app.include_router(ops_router(self.registry, lambda: self.ready))
        self._reading_routes(app)
        self._writing_routes(app)
        (document, dry_run), components = msgspec.json.schema_components(
            [PolicyDocument, DryRun], ref_template="#/components/schemas/{name}"
        )
        policy = {"application/yaml": {"schema": {"type": "string"}}}
        policy["application/json"] = {"schema": document}
        with_bodies(
            app,
            components,
            {
                "/v1/policies/validate": policy,
                "/v1/policies/{set_id}/versions": policy,
                "/v1/policies/{set_id}/shadow": policy,
                "/v1/policies/{set_id}/dry-run": {"application/json": {"schema": dry_run}},
            },
        )
        return app

    def _reading_routes(self, app: FastAPI) -> None:
        @app.post(
            "/v1/policies/validate",
            tags=["policies"],
            summary="Validate a document",
            responses=answers(VALID, 401, 403, 408, 413, 422),
        )
        async def validate(request: Request) -> JSONResponse:
            async def handle(_: Identity) -> tuple[int, Any]:
                doc = await self._document(await read_body(request, MAX_BODY_BYTES))
                return 200, {
                    "valid": True,
                    "policy_set_id": doc.policy_set_id,
                    "version": doc.version,
                    "policy_hash": content_hash(doc),
                }

            return await self._call("validate", request, handle)

        @app.get(
            "/v1/policies",
            tags=["policies"],
            summary="Versions in force",
            responses=answers({"type": "array", "items": VERSION}, 401, 403),
        )
        async def current(request: Request) -> JSONResponse:
            async def handle(identity: Identity) -> tuple[int, Any]:
                latest = {k: v for k, v in self.view.latest.items() if identity.may_see(v.label)}
                return 200, [
                    {
                        "policy_set_id": set_id,
                        "version": event.data.version,
                        "replaces": event.data.replaces,
                        "published": event.time.isoformat(),
                        "policy_hash": content_hash(event.data.document),
                    }
                    for set_id, event in sorted(latest.items())
                ]

            return await self._call("list", request, handle)

        @app.get(
            "/v1/policies/{set_id}",
            tags=["policies"],
            summary="The version in force",
            responses=answers(SHOWN, 401, 403, 404),
        )
        async def show(set_id: str, request: Request) -> JSONResponse:
            async def handle(identity: Identity) -> tuple[int, Any]:
                event = self._visible(set_id, identity)
                return 200, {
                    "policy_set_id": set_id,
                    "version": event.data.version,
                    "replaces": event.data.replaces,
                    "published": event.time.isoformat(),
                    "document": msgspec.to_builtins(event.data.document),
                }

            return await self._call("show", request, handle)

        @app.get(
            "/v1/policies/{set_id}/history",
            tags=["policies"],
            summary="Every version ever published, oldest first",
            responses=answers({"type": "array", "items": VERSION}, 401, 403, 404),
        )
        async def versions(set_id: str, request: Request) -> JSONResponse:
            async def handle(identity: Identity) -> tuple[int, Any]:
                found = [e for e in self.view.versions.get(set_id, []) if identity.may_see(e.label)]
                if not found:
                    raise Refused("not_found", f"no version of {set_id} is published")
                return 200, [
                    {
                        "version": event.data.version,
                        "replaces": event.data.replaces,
                        "published": event.time.isoformat(),
                        "source": event.source,
                        "policy_hash": content_hash(event.data.document),
                    }
                    for event in found
                ]

            return await self._call("history", request, handle)

    def _writing_routes(self, app: FastAPI) -> None:
        @app.post(
            "/v1/policies/{set_id}/versions",
            tags=["policies"],
            summary="Publish the next version (policy-admin; name the version it replaces)",
            status_code=201,
            responses=answers(PUBLISHED, 401, 403, 408, 409, 413, 422, 503, status=201),
        )
        async def push(set_id: str, request: Request, replaces: int | None = None) -> JSONResponse:
            async def handle(identity: Identity) -> tuple[int, Any]:
                if not identity.has_role(ADMIN_ROLE):
                    raise Refused("forbidden", f"publishing needs the role {ADMIN_ROLE}")
                doc = await self._document(await read_body(request, MAX_BODY_BYTES))
                if doc.policy_set_id != set_id:
                    raise Refused(
                        "invalid", f"the document is policy set {doc.policy_set_id}, not {set_id}"
                    )
                try:
                    event = await publish(
                        self.settings.kafka,
                        self.topics.policy,
                        doc,
                        replaces,
                        f"urn:c2bus:policy-api:{identity.subject}",
                    )
                except PolicyConflict as exc:
                    raise Refused("conflict", str(exc)) from exc
                self.view.published(event)
                log.info(
                    "policy.pushed",
                    extra={"set": set_id, "version": doc.version, "by": identity.subject},
                )
                return 201, {"policy_set_id": set_id, "version": event.data.version}

            return await self._call("push", request, handle)

        @app.post(
            "/v1/policies/{set_id}/dry-run",
            tags=["policies"],
            summary="Decide one directive",
            responses=answers(DRY_RUN, 401, 403, 404, 408, 413, 422),
        )
        async def dry_run(set_id: str, request: Request) -> JSONResponse:
            async def handle(identity: Identity) -> tuple[int, Any]:
                try:
                    body = msgspec.json.decode(
                        await read_body(request, MAX_BODY_BYTES), type=DryRun
                    )
                    directive = DIRECTIVES.decode_event(bytes(body.directive))
                except (msgspec.ValidationError, *MALFORMED, InvalidEvent) as exc:
                    raise Refused("invalid", f"invalid dry-run request: {exc}") from exc
                except RecursionError as exc:
                    raise Refused("invalid", "invalid dry-run request: nested too deeply") from exc
                policy = body.policy if body.policy is not None else self._current(set_id, identity)
                at = body.at or directive.time
                approvals = frozenset(
                    Approval(
                        a.approver,
                        a.nation,
                        frozenset(a.roles),
                        a.clearance or directive.classification,
                    )
                    for a in body.approvals
                )
                decision = await self._work(work.dry_run, policy, directive, at, approvals)
                if isinstance(decision, list):  # the posted policy's issues
                    raise _invalid(decision)
                return 200, {"directive": directive.id, "at": at.isoformat(), **_decision(decision)}

            return await self._call("dry-run", request, handle)

        @app.post(
            "/v1/policies/{set_id}/shadow",
            tags=["policies"],
            summary="Re-decide recorded directives under a candidate (the body)",
            responses=answers(SHADOW, 401, 403, 404, 408, 413, 422, 503),
        )
        async def shadow_run(set_id: str, request: Request, last: int = 1000) -> JSONResponse:
            async def handle(identity: Identity) -> tuple[int, Any]:
                if not 1 <= last <= MAX_SHADOW:
                    raise Refused("invalid", f"last must be between 1 and {MAX_SHADOW}")
                candidate = await self._document(await read_body(request, MAX_BODY_BYTES))
                current = self._current(set_id, identity)
                recorded = await recorded_directives(
                    self.settings.kafka, self.topics.submitted, last
                )
                # Only what the caller may see: of the rest, neither verdict nor change is
                # told (a candidate of the caller's choosing would narrow them down).
                directives = [d for d in recorded if identity.may_see(d.label)]
                report = await self._work(work.shadow_run, directives, current, candidate)
                return 200, {
                    "directives": report.directives,
                    "not_shown": len(recorded) - len(directives),
                    "current_version": report.current_version,
                    "candidate_version": report.candidate_version,
                    "changed": [asdict(c) for c in report.changed],
                }

            return await self._call("shadow", request, handle)

    async def run(self, stop: asyncio.Event) -> None:
        self.http.bind()
        await self.worker.start()
        log.info("policy_api.started", extra={"port": self.http.port})

        def caught_up() -> None:
            self.ready = True
            log.info("policy_api.ready", extra={"policy_sets": len(self.view.latest)})

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.http.serve())
            follower = tasks.create_task(
                follow(
                    self.settings.kafka,
                    self.view,
                    stop,
                    caught_up,
                    f"{self.settings.instance}-policies",
                )
            )
            try:
                await stop.wait()
            finally:
                follower.cancel()
                self.ready = False
                self.http.stop()
                await bounded("http.drain", self.http.stopped(), self.settings.shutdown_timeout_s)
                await bounded("worker.close", self.worker.close(), self.settings.shutdown_timeout_s)


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    verifier = verifier_for(settings.auth)
    await PolicyApi(settings, verifier).run(stop)
