"""HTTP ingest: validate CloudEvents against the contracts, produce them to Kafka.

``POST /v1/sa`` and ``/v1/sa/batch`` take SA events (to ``<prefix>.sa``, keyed by entity);
``POST /v1/directives`` and ``/v1/directives/batch`` take directives (to
``<prefix>.directives.submitted``, keyed by target unit). Callers present a bearer token
with the role ``sa-publisher`` or ``directive-publisher``. A batch is all or nothing: if
any event is invalid, none is produced and every problem is listed with its index.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter

from c2bus.adapters.auth import TokenVerifier, authenticate, verifier_for
from c2bus.adapters.kafka import kafka_step, new_producer, send_event, start_client
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.metrics import EventFlow, export_kafka_refusals
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
from c2bus.adapters.settings import ServiceSettings
from c2bus.adapters.signing import APPROVALS, signer_for
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import MALFORMED, EventDecoder
from c2bus.core.directives import APPROVER_ROLES, approval_event
from c2bus.core.events import (
    DirectiveEvent,
    Envelope,
    PositionEvent,
    SaEvent,
    TrackEvent,
    UnitStatusEvent,
    dated_ahead,
    event_type,
    issuer_scoped,
    security_label,
)
from c2bus.core.fields import EventId, Identifier, ReleasableTo, Text
from c2bus.core.identity import Identity
from c2bus.core.labels import Classification
from c2bus.errors import InvalidEvent, KafkaError, Refused
from c2bus.services.ingest.problems import TOO_DEEP, Problem, ProblemFinder, problems_of

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
#: An approval is a directive id, a target and a comment: a few hundred bytes.
MAX_APPROVAL_BYTES = 64 * 1024
MAX_BATCH = 1000


class ApprovalRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    directive_id: EventId
    target: Identifier
    comment: Text = ""
    classification: Classification = Classification.NATO_SECRET
    releasableto: ReleasableTo = "NATO"


SA_TYPES: tuple[type[Envelope], ...] = (TrackEvent, PositionEvent, UnitStatusEvent)
DIRECTIVE_TYPES: tuple[type[Envelope], ...] = (DirectiveEvent,)


class Route:
    """One kind of input: its decoders, problem finder, topic and required role."""

    def __init__(
        self,
        name: str,
        accepted: Any,
        types: tuple[type[Envelope], ...],
        topic: str,
        role: str,
    ) -> None:
        self.name = name
        self.decoder: EventDecoder[Any] = EventDecoder(accepted)
        self.list_decoder: EventDecoder[Any] = EventDecoder(list[accepted])
        self.finder = ProblemFinder(types)
        self.topic = topic
        self.role = role


class Ingest:
    def __init__(self, settings: ServiceSettings, verifier: TokenVerifier) -> None:
        self.settings = settings
        self.verifier = verifier
        topics = TopicNames(settings.kafka.topic_prefix)
        self.routes = {
            "sa": Route("sa", SaEvent, SA_TYPES, topics.sa, "sa-publisher"),
            "directives": Route(
                "directives",
                DirectiveEvent,
                DIRECTIVE_TYPES,
                topics.submitted,
                "directive-publisher",
            ),
        }
        self.registry = CollectorRegistry()
        export_kafka_refusals(self.registry)
        self.accepted = Counter(
            "c2bus_ingest_accepted", "Events produced", ["route"], registry=self.registry
        )
        self.rejected = Counter(
            "c2bus_ingest_rejected", "Requests refused", ["route", "status"], registry=self.registry
        )
        self.flow = EventFlow(self.registry)
        for route in (*self.routes, "approvals"):
            self.accepted.labels(route)
        self.producer: AIOKafkaProducer | None = None
        #: attests the approvals this edge authenticated (the enforcer counts no other)
        self.signer = signer_for(settings.signing, "ingest")
        self.app = self._build_app()
        self.http = HttpServer(self.app, settings.host, settings.port, settings.http_head_timeout_s)

    # --- HTTP ---------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(
            title="c2bus ingest",
            version="1",
            description=__doc__,
        )
        app.include_router(ops_router(self.registry, lambda: self.producer is not None))

        for name in self.routes:
            self._add_routes(app, name)
        app.add_api_route(
            "/v1/approvals",
            self._approve,
            methods=["POST"],
            status_code=202,
            summary="Approve a held directive (two-person rule, national red card)",
            responses={
                202: json_response("Produced to Kafka, attested by this ingest", ACCEPTED),
                **refusal_responses(
                    BODY_REFUSALS
                    | {
                        403: "The token lacks the role approver or red-card-holder, or the "
                        "approval is labelled above what it may see",
                        413: "Body over 64 KiB",
                        422: "Invalid approval: the problem, with its JSON path",
                    },
                    PROBLEM,
                ),
            },
            description="Body: {directive_id, target, comment?, classification?, "
            "releasableto?}. The approver's subject, nation and roles come from the token; "
            "the policy decides whether the approval counts.",
            tags=["directives"],
        )

        components = _components()
        media = ("application/cloudevents+json", "application/json")
        bodies = {
            path: {kind: {"schema": ref} for kind in media}
            for path, ref in components["bodies"].items()
        }
        with_bodies(app, components["schemas"], bodies)
        return app

    def _add_routes(self, app: FastAPI, name: str) -> None:
        route = self.routes[name]

        async def single(request: Request) -> JSONResponse:
            return await self._handle(request, route, batch=False)

        async def batch(request: Request) -> JSONResponse:
            return await self._handle(request, route, batch=True)

        refused = refusal_responses(
            BODY_REFUSALS
            | {
                403: f"The token lacks the role {route.role}, or may not publish this "
                "(another unit's, or above what it may see)",
                413: "Body over 4 MiB or batch over 1000 events",
                422: "Invalid event(s): every problem, with its JSON path",
            },
            PROBLEM,
        )
        app.add_api_route(
            f"/v1/{name}",
            single,
            methods=["POST"],
            status_code=202,
            responses={202: json_response("Produced to Kafka", ACCEPTED), **refused},
            summary=f"Publish one {name} event",
            tags=[name],
        )
        app.add_api_route(
            f"/v1/{name}/batch",
            batch,
            methods=["POST"],
            status_code=202,
            responses={
                202: json_response("Produced to Kafka, all of them", ACCEPTED_ALL),
                **refused,
            },
            summary=f"Publish a batch of {name} events (all or nothing)",
            tags=[name],
        )

    async def _handle(self, request: Request, route: Route, batch: bool) -> JSONResponse:
        try:
            identity = self._authorise(request, route)
            body = await read_body(request, MAX_BODY_BYTES)
            events = self._decode(body, route, batch)
            if route.name == "sa":
                refuse_dated_ahead(events, batch)
                events = [
                    reported_by(identity, e, i if batch else None) for i, e in enumerate(events)
                ]
            if route.name == "directives":
                events = [
                    issued_by(identity, e, i if batch else None) for i, e in enumerate(events)
                ]
            results = await self._produce(events, route)
        except Refused as exc:
            return self._refusal(exc, route.name)
        self.accepted.labels(route.name).inc(len(results))
        log.info(
            "events.accepted",
            extra={
                "route": route.name,
                "count": len(results),
                "subject": identity.subject,
                "event_ids": [r["id"] for r in results],
            },
        )
        return JSONResponse(results if batch else results[0], status_code=202)

    def _refusal(self, exc: Refused, route_name: str) -> JSONResponse:
        self.rejected.labels(route_name, str(exc.http_status)).inc()
        return refusal(exc)

    def _authorise(self, request: Request, route: Route) -> Identity:
        identity = self._identity(request)
        if not identity.has_role(route.role):
            raise Refused("forbidden", f"the token lacks the role {route.role}")
        return identity

    def _identity(self, request: Request) -> Identity:
        return authenticate(self.verifier, request.headers.get("authorization", ""))

    async def _approve(self, request: Request) -> JSONResponse:
        """An approval of a held directive, stamped with the caller's verified identity."""
        route = self.routes["directives"]
        try:
            identity = self._identity(request)
            if not any(identity.has_role(role) for role in APPROVER_ROLES):
                roles = " or ".join(APPROVER_ROLES)
                raise Refused("forbidden", f"the token lacks the role {roles}")
            try:
                raw = await read_body(request, MAX_APPROVAL_BYTES)
                body = msgspec.json.decode(raw, type=ApprovalRequest)
            except (msgspec.ValidationError, *MALFORMED, RecursionError) as exc:
                reason, _, path = str(exc).partition(" - at `")
                if isinstance(exc, RecursionError):
                    reason, path = TOO_DEEP, ""
                problem = Problem(path.rstrip("`") or "$", reason)
                raise Refused("invalid", "invalid approval", problems=[problem.as_dict()]) from exc
            if not identity.may_see(security_label(body.classification, body.releasableto)):
                raise Refused(
                    "forbidden", "an approval cannot be labelled above what its approver may see"
                )
            event = approval_event(
                identity,
                body.directive_id,
                body.target,
                classification=body.classification,
                releasableto=body.releasableto,
                comment=body.comment,
                source=f"urn:c2bus:ingest:{self.settings.instance}",
                now=datetime.now(UTC),
            )
            # the attestation: this edge authenticated the approver named in the event
            attest = functools.partial(self.signer.headers, APPROVALS)
            [result] = await self._produce([event], route, sign=attest)
        except Refused as exc:
            return self._refusal(exc, "approvals")
        self.accepted.labels("approvals").inc()
        log.info(
            "approval.accepted",
            extra={"directive_id": body.directive_id, "approver": identity.subject},
        )
        return JSONResponse(result, status_code=202)

    def _decode(self, body: bytes, route: Route, batch: bool) -> list[Envelope]:
        try:
            if batch:
                events: list[Envelope] = route.list_decoder.decode_event(body)
                if not events:
                    raise Refused("invalid", "the batch is empty")
                if len(events) > MAX_BATCH:
                    raise Refused("too_large", f"a batch holds at most {MAX_BATCH} events")
                return events
            return [route.decoder.decode_event(body)]
        except InvalidEvent as exc:
            raise Refused(
                "invalid", "invalid event", problems=self._problems(body, route, batch, exc)
            ) from exc

    def _problems(
        self, body: bytes, route: Route, batch: bool, exc: InvalidEvent
    ) -> list[dict[str, Any]]:
        found = problems_of(route.finder, route.decoder, body, batch=batch, message=str(exc))
        return [p.as_dict() for p in found]

    async def _produce(
        self,
        events: list[Envelope],
        route: Route,
        sign: Callable[[bytes], list[tuple[str, bytes]]] | None = None,
    ) -> list[dict[str, Any]]:
        producer = self.producer
        if producer is None:
            raise Refused("unavailable", "not ready: Kafka producer not started")
        try:
            with kafka_step("produce"):
                futures = [await send_event(producer, route.topic, e, sign) for e in events]
                metadata = await asyncio.gather(*futures)
        except KafkaError as exc:
            log.error("produce.failed", extra={"route": route.name, "error": str(exc)})
            raise Refused("unavailable", exc.for_caller("the events")) from exc
        for e in events:
            kind = event_type(e)
            self.flow.received("http", kind)
            self.flow.sent(route.topic, kind)
        return [
            {"id": e.id, "topic": m.topic, "partition": m.partition, "offset": m.offset}
            for e, m in zip(events, metadata, strict=True)
        ]

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        kafka = self.settings.kafka
        producer = new_producer(kafka, self.settings.instance)
        self.http.bind()
        await start_client(producer, kafka)
        self.producer = producer
        log.info("ingest.started", extra={"port": self.http.port})
        timeout = self.settings.shutdown_timeout_s
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.http.serve())
            try:
                await stop.wait()
            finally:
                self.http.stop()  # stop intake: no new requests
                await bounded("http.drain", self.http.stopped(), timeout)
                self.producer = None
                await bounded("producer.stop", producer.stop(), timeout)  # flushes


def refuse_dated_ahead(events: list[Envelope], batch: bool) -> None:
    """SA dated more than the skew ahead of this clock would stand as its entity's newest
    state until then: refused (422), every such event located."""
    now = datetime.now(UTC)
    problems = [
        Problem("$.time", ahead, index if batch else None).as_dict()
        for index, event in enumerate(events)
        if (ahead := dated_ahead(event, now)) is not None
    ]
    if problems:
        raise Refused("invalid", "invalid event", problems=problems)


def reported_by(identity: Identity, event: Envelope, index: int | None = None) -> Envelope:
    """SA as its authenticated publisher may report it: a track in the namespace of the
    token's unit (``<unit>~<track>``; one already scoped to a unit the token acts for keeps
    its name), so that no publisher overwrites another's track of the same name; a position
    or status only of a unit the token acts for. Raises :class:`Refused` otherwise."""
    if not isinstance(event, TrackEvent):
        assert isinstance(event, PositionEvent | UnitStatusEvent)
        if not identity.may_act_for(event.data.unit_id):
            raise Refused(
                "forbidden", f"the token may report for {', '.join(identity.acting())} only"
            )
        return event
    try:
        track_id = identity.in_namespace(event.data.track_id)
    except ValueError as exc:
        problem = Problem("$.data.track_id", str(exc))
        raise Refused("invalid", "invalid event", problems=[problem.as_dict(index)]) from exc
    if track_id is None:
        raise Refused(
            "forbidden",
            "the token may name tracks only in its own namespace: "
            + ", ".join(f"{unit}~<track>" for unit in identity.acting()),
        )
    return msgspec.structs.replace(
        event, data=msgspec.structs.replace(event.data, track_id=track_id)
    )


def issued_by(identity: Identity, event: Envelope, index: int | None = None) -> Envelope:
    """A directive as its authenticated issuer may submit it: for the token's unit (or one
    it acts for), labelled within what the token may see, with no decision id (the
    enforcer's to set); its id is scoped to its issuer (``<issuer>~<id>``) and its
    CloudEvents ``subject`` becomes the issuing subject, which the two-person rule never
    counts as an approver. Raises :class:`Refused` otherwise."""
    assert isinstance(event, DirectiveEvent)
    if not identity.may_act_for(event.data.issuer):
        raise Refused(
            "forbidden",
            f"the token may issue directives for {', '.join(identity.acting())} only",
        )
    if not identity.may_see(event.label):
        raise Refused("forbidden", "a directive cannot be labelled above what its issuer may see")
    for name in ("decisionid", "decidedat"):
        if getattr(event, name) is not None:
            problem = Problem(f"$.{name}", "set by the enforcer only, never by a submitter")
            raise Refused("invalid", "invalid event", problems=[problem.as_dict(index)])
    try:  # the id is the issuer's alone: no unit can take another's
        directive_id = issuer_scoped(event.data.issuer, event.id)
    except ValueError as exc:
        problem = Problem("$.id", str(exc))
        raise Refused("invalid", "invalid event", problems=[problem.as_dict(index)]) from exc
    return msgspec.structs.replace(event, id=directive_id, subject=identity.subject)


def _components() -> dict[str, Any]:
    """OpenAPI request-body schemas generated from the event types."""
    schemas, components = msgspec.json.schema_components(
        [SaEvent, list[SaEvent], DirectiveEvent, list[DirectiveEvent]],
        ref_template="#/components/schemas/{name}",
    )
    sa, sa_batch, directive, directive_batch = schemas
    (approval,), approval_components = msgspec.json.schema_components(
        [ApprovalRequest], ref_template="#/components/schemas/{name}"
    )
    return {
        "schemas": components | approval_components,
        "bodies": {
            "/v1/sa": sa,
            "/v1/sa/batch": sa_batch,
            "/v1/directives": directive,
            "/v1/directives/batch": directive_batch,
            "/v1/approvals": approval,
        },
    }


#: What a 202 answers, per event.
ACCEPTED = {
    "type": "object",
    "required": ["id", "topic", "partition", "offset"],
    "properties": {
        "id": {"type": "string"},
        "topic": {"type": "string"},
        "partition": {"type": "integer"},
        "offset": {"type": "integer"},
    },
}
ACCEPTED_ALL = {"type": "array", "items": ACCEPTED}
#: One problem of a refused body.
PROBLEM = {
    "type": "object",
    "required": ["path", "message"],
    "properties": {
        "path": {"type": "string"},
        "message": {"type": "string"},
        "index": {"type": "integer"},
    },
}


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    verifier = verifier_for(settings.auth)
    await Ingest(settings, verifier).run(stop)
