"""Thin asyncio adapters over aiokafka: reaching a cluster, clients, an admin client.

aiokafka's exceptions are translated here into :mod:`c2bus.errors` so callers handle one
tree: :func:`kafka_step` wraps a send, commit, fetch or transaction step and raises
:class:`~c2bus.errors.KafkaError` (``retriable``, ``fenced``) from whatever failed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalOperation,
    InvalidProducerEpoch,
    KafkaTimeoutError,
    ProducerFenced,
    SaslAuthenticationFailed,
)
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.structs import TopicPartition

from c2bus.adapters.settings import KafkaSecurity, KafkaSettings
from c2bus.core.cloudevents import KAFKA_HEADERS
from c2bus.core.codec import encode_event
from c2bus.core.events import Envelope
from c2bus.errors import (
    ConfigError,
    KafkaError,
    KafkaRefused,
    KafkaUnavailable,
    ProducerFencedOut,
)

log = logging.getLogger(__name__)

#: what aiokafka raises once a newer producer has taken the transactional id
_FENCING = (ProducerFenced, InvalidProducerEpoch)


def is_fencing(error: BaseException | None) -> bool:
    """Did this error (a delivery's, say) come from being fenced by a newer producer?"""
    return isinstance(error, _FENCING) or bool(getattr(error, "fenced", False))


#: The library errors by which Kafka refuses a client (an ACL, its credentials), each
#: exported from the start as ``c2bus_kafka_refusals_total{error}``.
REFUSAL_ERRORS = (
    "TopicAuthorizationFailedError",
    "GroupAuthorizationFailedError",
    "TransactionalIdAuthorizationFailed",
    "ClusterAuthorizationFailedError",
    "SaslAuthenticationFailed",
)

#: Kafka's refusals of this process's clients, by library error. Every service exports it
#: as ``c2bus_kafka_refusals_total`` (a service is a process of its own).
REFUSALS: collections.Counter[str] = collections.Counter(dict.fromkeys(REFUSAL_ERRORS, 0))


def is_refusal(exc: BaseException) -> bool:
    """Did Kafka refuse the client (an authorisation or authentication error)?"""
    return isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError) or (
        isinstance(exc, AioKafkaError) and "AuthorizationFailed" in type(exc).__name__
    )


def count_refusal(error: KafkaRefused) -> None:
    REFUSALS[error.cause] += 1


def translate(step: str, exc: BaseException) -> KafkaError:
    """The c2bus error for a library error raised by ``step``."""
    cause = type(exc).__name__
    message = f"{step} failed: {exc!r}"[:1000]
    if isinstance(exc, _FENCING):
        return ProducerFencedOut(message, cause="ProducerFenced")
    if is_refusal(exc):
        # The principal may be granted again while the service runs: retriable.
        return KafkaRefused(
            f"Kafka refused {step}: {exc!r}: check the credentials and the ACLs of this "
            "service's role (`c2bus kafka acls show`, deploy/kafka/acls.yaml)"[:1000],
            retriable=True,
            cause=cause,
        )
    if isinstance(exc, AioKafkaError):
        # aiokafka calls its own request timeout not retriable; for us any timeout is: the
        # same step may well succeed when tried again.
        retriable = bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
        return KafkaError(message, retriable=retriable, cause=cause)
    # IllegalOperation: the producer is in a state the step cannot run in (after a fence
    # aiokafka reports every later step so); the lane must be set up again.
    return KafkaError(message, retriable=not isinstance(exc, IllegalOperation), cause=cause)


#: library errors a Kafka step can raise (timeouts and socket errors included)
LIBRARY_ERRORS = (AioKafkaError, IllegalOperation, TimeoutError, OSError)


@contextlib.contextmanager
def kafka_step(step: str) -> Iterator[None]:
    """Run one Kafka step; what it raises comes out as a :class:`KafkaError`.

    Wrap the step's ``asyncio.timeout`` too, so that running out of time is translated.
    """
    try:
        yield
    except LIBRARY_ERRORS as exc:
        error = translate(step, exc)
        if isinstance(error, KafkaRefused):
            count_refusal(error)
        raise error from exc


async def pause_refused(
    loop_name: str, exc: KafkaRefused, attempt: int, stop: asyncio.Event
) -> None:
    """A loop that Kafka refuses while it runs (an ACL or a credential withdrawn) logs the
    refusal and waits before it tries again (0.5 s, doubling up to 10 s, or until ``stop``):
    counted (``c2bus_kafka_refusals_total``) and alerted, never a silent spin."""
    delay = min(0.5 * 2 ** max(0, attempt - 1), 10.0)
    log.error(
        "kafka.refused",
        extra={"loop": loop_name, "error": str(exc), "attempt": attempt, "retry_in_s": delay},
    )
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await stop.wait()


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """What every aiokafka client is built with: where Kafka is, how long a request may
    take, and how the client authenticates and checks the brokers."""
    security = kafka.security
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "request_timeout_ms": kafka.request_timeout_ms,
        "security_protocol": security.protocol,
    }
    if security.protocol == "PLAINTEXT":
        _warn_plaintext(kafka.bootstrap)
        return options
    if not kafka.external and security.ca_file is not None and not security.ca_file.exists():
        # the local broker makes its credentials when it first starts: it never has
        raise KafkaUnavailable(f"no local Kafka answered at {kafka.bootstrap}")
    options["ssl_context"] = _ssl_context(security)
    if security.protocol == "SASL_SSL":
        options["sasl_mechanism"] = security.mechanism
        options["sasl_plain_username"] = security.user
        options["sasl_plain_password"] = security.password()
    return options


def librdkafka_config(kafka: KafkaSettings) -> dict[str, str]:
    """The same connection for a librdkafka client (kcat, confluent-kafka): its property
    names, the password inlined (librdkafka reads no password file)."""
    security = kafka.security
    config = {"bootstrap.servers": kafka.bootstrap, "security.protocol": security.protocol}
    if security.protocol != "PLAINTEXT" and security.ca_file is not None:
        config["ssl.ca.location"] = str(security.ca_file)
    if security.protocol == "SSL":
        config["ssl.certificate.location"] = str(security.cert_file)
        config["ssl.key.location"] = str(security.key_file)
    if security.protocol == "SASL_SSL":
        config["sasl.mechanisms"] = security.mechanism
        config["sasl.username"] = security.user or ""
        config["sasl.password"] = security.password()
    return config


def java_client_config(kafka: KafkaSettings) -> dict[str, str]:
    """The same connection for a Java client or Kafka's own tools (``--command-config``)."""
    security = kafka.security
    config = {"bootstrap.servers": kafka.bootstrap, "security.protocol": security.protocol}
    if security.protocol != "PLAINTEXT" and security.ca_file is not None:
        config["ssl.truststore.type"] = "PEM"
        config["ssl.truststore.location"] = str(security.ca_file)
    if security.protocol == "SASL_SSL":
        config["sasl.mechanism"] = security.mechanism
        config["sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{security.user}" password="{security.password()}";'
        )
    return config


@functools.cache
def _ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """One TLS context per security settings: the CA to check the brokers against (their
    host names included) and, for ``SSL``, the client certificate."""
    try:
        context = ssl.create_default_context(
            cafile=str(security.ca_file) if security.ca_file else None
        )
        if security.cert_file is not None:
            context.load_cert_chain(
                str(security.cert_file), str(security.key_file) if security.key_file else None
            )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the Kafka TLS files (CA {security.ca_file}, certificate "
            f"{security.cert_file}): {exc}: check C2BUS_KAFKA_CA_FILE, C2BUS_KAFKA_CERT_FILE "
            "and C2BUS_KAFKA_KEY_FILE"
        ) from None
    if security.protocol == "SSL" and security.cert_file is None:
        raise ConfigError(
            "C2BUS_KAFKA_SECURITY_PROTOCOL=SSL needs a client certificate: set "
            "C2BUS_KAFKA_CERT_FILE and C2BUS_KAFKA_KEY_FILE"
        )
    return context


@functools.cache
def _warn_plaintext(bootstrap: str) -> None:
    log.warning(
        "kafka.plaintext",
        extra={
            "bootstrap": bootstrap,
            "detail": "C2BUS_KAFKA_SECURITY_PROTOCOL=PLAINTEXT: no authentication, no "
            "encryption; anyone on the network can read and write every topic",
        },
    )


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What a metadata request told us about a cluster."""

    bootstrap: str
    broker_ids: tuple[int, ...]
    controller_id: int | None
    topics: frozenset[str]
    partitions: dict[str, frozenset[int]]


async def probe(kafka: KafkaSettings, timeout_s: float | None = None) -> ClusterInfo:
    """Ask the cluster for its metadata; raise :class:`KafkaUnavailable` if nobody answers
    within ``timeout_s`` (default: the request timeout)."""
    timeout_s = kafka.request_timeout_s if timeout_s is None else timeout_s
    # half the deadline per request: a bootstrap (a connection, then a metadata request)
    # ends on its own within it, and a deadline that cuts one short waits for that end
    client = AIOKafkaClient(
        **{**client_options(kafka), "request_timeout_ms": max(1, int(timeout_s * 500))},
        retry_backoff_ms=200,
        metadata_max_age_ms=60_000,
    )
    with _reasons() as reasons:
        try:
            async with asyncio.timeout(timeout_s):
                await bootstrap(client)
                metadata = await client.fetch_all_metadata()
        except (TimeoutError, AioKafkaError, OSError) as exc:
            error = refusal(kafka, reasons.last, exc)
            if isinstance(error, KafkaRefused):
                raise error from exc
            raise KafkaUnavailable(
                f"no Kafka broker answered at {kafka.bootstrap} within {timeout_s:g}s"
            ) from exc
        finally:
            await client.close()
    return ClusterInfo(
        bootstrap=kafka.bootstrap,
        broker_ids=tuple(sorted(b.nodeId for b in metadata.brokers())),
        controller_id=metadata.controller.nodeId if metadata.controller else None,
        topics=frozenset(metadata.topics()),
        partitions={
            t: frozenset(metadata.partitions_for_topic(t) or ()) for t in metadata.topics()
        },
    )


@contextlib.asynccontextmanager
async def admin_client(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client, closed on exit; unreachable clusters raise KafkaUnavailable."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    try:
        await uncut(admin.start(), admin.close)
    except (AioKafkaError, OSError) as exc:
        await admin.close()
        raise KafkaUnavailable(f"no Kafka broker answered at {kafka.bootstrap}") from exc
    try:
        yield admin
    finally:
        await admin.close()


def new_producer(
    kafka: KafkaSettings,
    client_id: str,
    *,
    transactional_id: str | None = None,
    request_timeout_ms: int | None = None,
    linger_ms: int = 5,
    transaction_timeout_ms: int = 60_000,
    retry_backoff_ms: int = 100,
    max_batch_size: int = 16_384,
) -> AIOKafkaProducer:
    """An idempotent ``acks=all`` producer (transactional when given a transactional id).

    Requests time out after the settings' request timeout, or ``request_timeout_ms`` where a
    caller must stay within a shorter bound of its own (never longer than the settings').
    """
    timeout_ms = kafka.request_timeout_ms
    if request_timeout_ms is not None:
        timeout_ms = min(timeout_ms, request_timeout_ms)
    return AIOKafkaProducer(
        **{**client_options(kafka), "request_timeout_ms": timeout_ms},
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        transaction_timeout_ms=transaction_timeout_ms,
        retry_backoff_ms=retry_backoff_ms,
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
    )


def new_consumer(
    kafka: KafkaSettings,
    client_id: str,
    *topics: str,
    group_id: str | None,
    auto_offset_reset: str = "earliest",
    isolation_level: str = "read_committed",
    session_timeout_ms: int = 10_000,
    fetch_max_wait_ms: int = 500,
) -> AIOKafkaConsumer:
    """A ``read_committed`` consumer with manual commits (offsets are ours to place)."""
    return AIOKafkaConsumer(
        *topics,
        **client_options(kafka),
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        isolation_level=isolation_level,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=session_timeout_ms // 3,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def send_event(
    producer: AIOKafkaProducer,
    topic: str,
    event: Envelope,
    sign: Callable[[bytes], list[tuple[str, bytes]]] | None = None,
) -> asyncio.Future[Any]:
    """Queue one event: its own key, CloudEvents structured mode (the ``content-type``
    header of the Kafka binding), and the headers ``sign`` gives its bytes (a signature);
    returns its delivery future."""
    value = encode_event(event)
    return await send_encoded(producer, topic, event.key(), value, sign(value) if sign else [])


async def send_encoded(
    producer: AIOKafkaProducer,
    topic: str,
    key: str,
    value: bytes,
    headers: Sequence[tuple[str, bytes]] = (),
) -> asyncio.Future[Any]:
    """Queue one encoded event with its key, CloudEvents structured mode and ``headers``
    (a signature); returns its delivery future."""
    delivery: asyncio.Future[Any] = await producer.send(
        topic, value, key=key.encode(), headers=[*KAFKA_HEADERS, *headers]
    )
    return delivery


class _Reasons(logging.Handler):
    """What aiokafka logs while a client bootstraps: the broker's reason for refusing it
    (aiokafka raises only "Unable to bootstrap")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


@contextlib.contextmanager
def _reasons() -> Iterator[_Reasons]:
    """Listen to aiokafka's errors for a moment; where they were silenced (the CLI quietens
    aiokafka), they are heard here and stay silent elsewhere."""
    library = logging.getLogger("aiokafka")
    reasons = _Reasons()
    level, propagate = library.level, library.propagate
    if library.getEffectiveLevel() > logging.ERROR:
        library.setLevel(logging.ERROR)
        library.propagate = False
    library.addHandler(reasons)
    try:
        yield reasons
    finally:
        library.removeHandler(reasons)
        library.setLevel(level)
        library.propagate = propagate


def refusal(kafka: KafkaSettings, reason: str | None, exc: BaseException) -> KafkaError:
    """The c2bus error for a client that could not start: :class:`KafkaRefused` naming the
    setting to check when a broker answered and refused, else :class:`KafkaUnavailable`."""
    where, security = kafka.bootstrap, kafka.security
    text = reason or ""
    if isinstance(exc, AioKafkaError) and "AuthorizationFailed" in type(exc).__name__:
        return KafkaRefused(
            f"Kafka at {where}: {security.user!r} is not allowed to {exc}: check the ACLs for "
            "its role (`c2bus kafka acls show`, deploy/kafka/acls.yaml)",
            cause=type(exc).__name__,
        )
    if "SaslAuthenticationFailed" in text or "Authentication failed" in text:
        return KafkaRefused(
            f"Kafka at {where} refused the credentials of {security.user!r} "
            f"({security.mechanism}): check C2BUS_KAFKA_USER and C2BUS_KAFKA_PASSWORD_FILE "
            f"({security.password_file})",
            cause="SaslAuthenticationFailed",
        )
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.split("certificate verify failed:")[-1].split("(_ssl")[0].strip()
        return KafkaRefused(
            f"the certificate of Kafka at {where} is not trusted ({detail}): check "
            f"C2BUS_KAFKA_CA_FILE ({security.ca_file or 'the system CAs'})",
            cause="SSLCertVerificationError",
        )
    if security.protocol == "PLAINTEXT" and text.endswith("closed"):
        return KafkaRefused(
            f"Kafka at {where} closed the connection of a PLAINTEXT client: it expects TLS; "
            "check C2BUS_KAFKA_SECURITY_PROTOCOL",
            cause="KafkaConnectionError",
        )
    suffix = f" ({text[:200]})" if text else ""
    return KafkaUnavailable(f"no Kafka broker answered at {where}{suffix}")


_T = TypeVar("_T")
_CLEANUPS: set[asyncio.Future[None]] = set()  # undoings under way for callers that left


async def _undo_once_done(work: asyncio.Future[Any], undo: Callable[[], Awaitable[Any]]) -> None:
    with contextlib.suppress(BaseException):
        await work
    with contextlib.suppress(Exception):
        await undo()


async def uncut(work: Awaitable[_T], undo: Callable[[], Awaitable[Any]]) -> _T:
    """Await ``work`` (a client's start or bootstrap) so that a caller who gives up (a
    console that left mid-replay, a service stopping, a deadline) leaves nothing open.

    aiokafka loses a connection cut off while it bootstraps (the metadata request in
    flight: it closes the connection only on a Kafka error or its own timeout), and the
    socket stays open until the collector warns of it. So a cancelled ``work`` is let
    finish, bounded by the client's own request timeout, then ``undo`` (its stop or close)
    runs, and only then does the cancellation go on."""
    started = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(started)
    except asyncio.CancelledError:
        cleanup = asyncio.ensure_future(_undo_once_done(started, undo))
        _CLEANUPS.add(cleanup)
        cleanup.add_done_callback(_CLEANUPS.discard)
        with contextlib.suppress(BaseException):
            await asyncio.shield(cleanup)
        raise


async def bootstrap(client: AIOKafkaClient) -> None:
    """``client.bootstrap()``, closing the client if the caller gives up (see :func:`uncut`)."""
    await uncut(client.bootstrap(), client.close)


async def start_client(client: AIOKafkaProducer | AIOKafkaConsumer, kafka: KafkaSettings) -> None:
    """Start a client; a failure comes out as :class:`KafkaRefused` (a broker said no, and
    why) or :class:`KafkaUnavailable` (none answered). A caller who gives up while it
    starts leaves it stopped (see :func:`uncut`)."""
    with _reasons() as reasons:
        try:
            await uncut(client.start(), client.stop)
        except (AioKafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await client.stop()
            error = refusal(kafka, reasons.last, exc)
            if isinstance(error, KafkaRefused):
                count_refusal(error)
            raise error from exc


async def start_clients(
    kafka: KafkaSettings, *clients: AIOKafkaProducer | AIOKafkaConsumer
) -> None:
    """Start clients in order; if one fails, stop them all and raise."""
    try:
        for client in clients:
            await start_client(client, kafka)
    except BaseException:
        for client in reversed(clients):  # those not started too: they hold resources
            with contextlib.suppress(Exception):
                await client.stop()
        raise


async def topic_partitions(
    kafka: KafkaSettings, topics: list[str] | tuple[str, ...], timeout_s: float | None = None
) -> list[TopicPartition]:
    """Every partition of ``topics``, in order; :class:`KafkaError` naming any missing."""
    info = await probe(kafka, timeout_s)
    missing = [t for t in topics if not info.partitions.get(t)]
    if missing:
        raise KafkaError(
            f"topics missing: {', '.join(missing)}: check C2BUS_TOPIC_PREFIX, or run "
            "`c2bus topics create`"
        )
    return [TopicPartition(t, p) for t in topics for p in sorted(info.partitions[t])]


async def assign_all(
    consumer: AIOKafkaConsumer,
    kafka: KafkaSettings,
    topics: list[str],
    *,
    from_start: bool = False,
) -> None:
    """Assign every partition of ``topics`` to a group-less consumer, positioned at the end
    (or the beginning, with ``from_start``).

    Positions are resolved before returning, so anything produced afterwards is seen.
    """
    tps = await topic_partitions(kafka, topics)
    consumer.assign(tps)
    async with asyncio.timeout(kafka.request_timeout_s):
        if from_start:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)


@dataclass(frozen=True, slots=True)
class Reading:
    """What :func:`read_topic` read: the records, oldest first per partition, and each
    partition's end (the offset after the last one read to)."""

    records: list[Any]
    ends: dict[int, int]


async def read_to_end(
    kafka: KafkaSettings,
    topic: str,
    partitions: list[int] | None = None,
    *,
    last: int | None = None,
    timeout_s: float | None = None,
) -> list[Any]:
    """Every committed record of ``topic`` (or of some of its partitions) up to its end
    when called; with ``last``, only the last ``last`` offsets of each partition."""
    reading = await read_topic(kafka, topic, partitions, last=last, timeout_s=timeout_s)
    return reading.records


async def read_topic(
    kafka: KafkaSettings,
    topic: str,
    partitions: list[int] | None = None,
    *,
    starts: Mapping[int, int] | None = None,
    last: int | None = None,
    since_ms: int | None = None,
    each: Callable[[list[Any]], None] | None = None,
    timeout_s: float | None = None,
) -> Reading:
    """The committed records of ``topic`` (or of some of its partitions) up to its end when
    called, read by a group-less ``read_committed`` consumer: from each partition's
    beginning, or from its offset in ``starts``, or (with ``last``) its last ``last``
    offsets, or (with ``since_ms``) its first record stamped at or after that time. With
    ``each``, every batch read (one partition's, oldest first) is handed to it and none is
    kept. A stall, no progress for ``timeout_s`` (default: the request timeout), raises
    :class:`KafkaError`."""
    timeout_s = kafka.request_timeout_s if timeout_s is None else timeout_s
    info = await probe(kafka, timeout_s)
    existing = sorted(info.partitions.get(topic, ()))
    if not existing:
        raise KafkaError(f"topic {topic} does not exist: run `c2bus topics create`")
    wanted = existing if partitions is None else [p for p in existing if p in partitions]
    tps = [TopicPartition(topic, p) for p in wanted]
    records: list[Any] = []
    if not tps:
        return Reading(records, {})
    # a short long-poll: closing the consumer waits for the fetch in flight (TLS)
    consumer = new_consumer(kafka, "c2bus-reader", group_id=None, fetch_max_wait_ms=50)
    await start_client(consumer, kafka)
    try:
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        stamped = {}
        if since_ms is not None:
            stamped = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        for tp in tps:
            start = begin[tp]
            if last is not None:
                start = max(start, end[tp] - last)
            if starts is not None and tp.partition in starts:
                start = min(max(start, starts[tp.partition]), end[tp])
            if since_ms is not None:
                found = stamped.get(tp)
                start = end[tp] if found is None else max(start, found.offset)
            consumer.seek(tp, start)
        # A fetch can return nothing and still move the position: past an aborted
        # transaction, or the markers, at the end of a partition (as KAFKA-12980 describes
        # for the Java client). So the end is judged by positions, and a stall is no
        # progress for ``timeout_s``.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        behind = [tp for tp in tps if await consumer.position(tp) < end[tp]]
        while behind:
            batch = await consumer.getmany(*behind, timeout_ms=200)
            for part in batch.values():
                if each is None:
                    records.extend(part)
                else:
                    each(part)
            still = [tp for tp in behind if await consumer.position(tp) < end[tp]]
            if batch or len(still) < len(behind):
                deadline = loop.time() + timeout_s
            elif loop.time() > deadline:
                raise KafkaError(f"reading {topic} stalled before its end")
            behind = still
    finally:
        await consumer.stop()
    return Reading(records, {tp.partition: end[tp] for tp in tps})
