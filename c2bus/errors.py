"""Every error c2bus raises on purpose derives from :class:`C2BusError`.

The tree::

    C2BusError
    ├── ConfigError            a setting or the environment is wrong (names the variable)
    ├── InvalidEvent           bytes that are not a valid c2bus event (dead-letter material)
    ├── PolicyError            an alignment-policy document is invalid
    ├── AuthError              a token is missing, malformed, expired or not ours
    └── KafkaError             a Kafka step failed; ``retriable`` and ``fenced`` say what next
        ├── KafkaUnavailable   no broker answered at the configured bootstrap address
        ├── ProducerFencedOut  a newer producer took our transactional id (``fenced``)
        ├── TopicError         topics could not be created or inspected
        └── LocalKafkaError    the local broker tooling failed: Java or Maven missing,
                               port taken, data directory of another cluster, start failed

Library exceptions are translated at the boundary (``raise X(...) from exc``; for Kafka,
``c2bus.adapters.kafka.kafka_step``) so callers handle one tree. Every message is one line
that names the cause and, where there is one, the fix.
"""

from __future__ import annotations


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


class PolicyError(C2BusError):
    """An alignment-policy document is invalid; nothing passes without a valid one."""


class AuthError(C2BusError):
    """A token was refused; the message says why (never the token itself)."""


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


class KafkaUnavailable(KafkaError):
    """No broker answered at the configured bootstrap address."""


class ProducerFencedOut(KafkaError):
    """A producer with our transactional id started elsewhere: this one is a zombie."""

    fenced = True


class TopicError(KafkaError):
    """Topics could not be created or inspected."""


class LocalKafkaError(KafkaError):
    """The project's own local broker tooling failed."""
