"""Every error c2bus raises on purpose derives from :class:`C2BusError`.

The tree::

    C2BusError
    ├── ConfigError            a setting or the environment is wrong (names the variable)
    ├── InvalidEvent           bytes that are not a valid c2bus event (dead-letter material)
    │   └── UnverifiedRecord   a record whose signature does not verify (never trusted)
    ├── PolicyError            an alignment-policy document is invalid
    ├── AuthError              a token is missing, malformed, expired or not ours
    ├── Refused                a request refused, with its code (HTTP status, console error)
    └── KafkaError             a Kafka step failed; ``retriable`` and ``fenced`` say what next
        ├── KafkaUnavailable   no broker answered at the configured bootstrap address
        ├── KafkaRefused       a broker answered and refused us: credentials, certificate,
        │                      protocol or ACLs (names which, and the setting to check)
        ├── ProducerFencedOut  a newer producer took our transactional id (``fenced``)
        ├── TopicError         topics could not be created or inspected
        └── LocalKafkaError    the local broker tooling failed: Java or Maven missing,
                               port taken, data directory of another cluster, start failed

Library exceptions are translated at the boundary (``raise X(...) from exc``; for Kafka,
``c2bus.adapters.kafka.kafka_step``) so callers handle one tree. Every message is one line
that names the cause and, where there is one, the fix.
"""

from __future__ import annotations

from typing import Any, ClassVar


class C2BusError(Exception):
    """Root of every error c2bus raises on purpose."""


class ConfigError(C2BusError):
    """A setting or the environment is wrong."""


class InvalidEvent(C2BusError):
    """Bytes that do not decode into a valid event.

    ``path`` is the JSON path of the offending field (``$`` when the whole document is bad),
    ``reason`` the validation message without the path.
    """

    def __init__(self, reason: str, path: str = "$") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{reason} - at `{path}`" if path != "$" else reason)


class UnverifiedRecord(InvalidEvent):
    """A record whose signature does not verify against the trust store: unsigned, signed
    by an unknown key or one not trusted for its kind of record, or tampered with. Never
    delivered, never counted; dead-lettered with the reason."""


class PolicyError(C2BusError):
    """An alignment-policy document is invalid; nothing passes without a valid one."""


class AuthError(C2BusError):
    """A token was refused; the message says why (never the token itself)."""


class Refused(C2BusError):
    """A request refused. ``code`` is one of the documented error codes: a console gets it
    in an ``error`` frame with the request's correlation id, an HTTP client as the
    response's status (:attr:`http_status`). ``fields`` go with it (``retry_after_ms``).
    The message says why without revealing what the caller may not see."""

    HTTP_STATUS: ClassVar[dict[str, int]] = {
        "bad_request": 400,
        "bad_position": 400,
        "unauthorized": 401,
        "forbidden": 403,
        "not_found": 404,
        "unknown_directive": 404,
        "timeout": 408,
        "conflict": 409,
        "illegal_transition": 409,
        "too_large": 413,
        "invalid": 422,
        "rate_limited": 429,
        "unavailable": 503,
    }

    def __init__(
        self,
        code: str,
        message: str,
        *,
        problems: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> None:
        if code not in self.HTTP_STATUS:
            raise ValueError(f"unknown refusal code {code!r}")
        super().__init__(message)
        self.code = code
        #: for HTTP: where the request body is wrong (JSON path and reason, one per problem)
        self.problems = problems or []
        self.fields = fields

    @property
    def http_status(self) -> int:
        return self.HTTP_STATUS.get(self.code, 400)


class KafkaError(C2BusError):
    """Talking to Kafka failed.

    ``retriable``: the same step may succeed if tried again (a timeout, a leader that moved);
    ``fenced``: another owner has taken over (retrying cannot help, wait for the rebalance);
    ``cause``: the name of the library error behind it, for metrics (``TimeoutError``,
    ``KafkaConnectionError``…).
    """

    retriable: bool = False
    fenced: bool = False

    def __init__(self, message: str, *, retriable: bool = False, cause: str = "") -> None:
        super().__init__(message)
        self.retriable = retriable
        self.cause = cause or type(self).__name__

    def for_caller(self, what: str) -> str:
        """What a caller whose request failed on it is told (``what``: what Kafka did not
        take): the library error's name, never a principal, an ACL or a broker address."""
        return f"Kafka did not accept {what}: {self.cause}"


class KafkaUnavailable(KafkaError):
    """No broker answered at the configured bootstrap address."""


class KafkaRefused(KafkaError):
    """A broker answered and refused the client: its credentials, the broker's certificate,
    the security protocol, or an ACL. Retrying the same settings cannot help."""

    def for_caller(self, what: str) -> str:
        return f"Kafka refused the service ({self.cause}); operators: see its log"


class ProducerFencedOut(KafkaError):
    """A producer with our transactional id started elsewhere: this one is a zombie."""

    fenced = True


class TopicError(KafkaError):
    """Topics could not be created or inspected."""


class LocalKafkaError(KafkaError):
    """The project's own local broker tooling failed."""
