"""Making events: the one CloudEvents envelope factory every producer uses, and the Kafka
protocol binding's structured-mode header every record of an event carries.

An event made from another (a decision on a directive, a lifecycle step, an approval) takes
that event's security label: :func:`new_event` with ``like=``. An event that starts a story
(an SA report, a directive) is given its label.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from c2bus.core.events import Envelope
from c2bus.core.labels import Classification

E = TypeVar("E", bound=Envelope)

#: The CloudEvents Kafka protocol binding, structured content mode: the record value is
#: the whole event as JSON, and says so in this header.
CONTENT_TYPE = "application/cloudevents+json"
KAFKA_HEADERS: list[tuple[str, bytes]] = [("content-type", CONTENT_TYPE.encode())]


def new_event(
    cls: type[E],
    *,
    id: str,
    source: str,
    time: datetime,
    data: Any,
    like: Envelope | None = None,
    classification: Classification | None = None,
    releasableto: str | None = None,
    subject: str | None = None,
) -> E:
    """A CloudEvents 1.0 event of type ``cls``, labelled like ``like`` or as given."""
    if like is not None:
        classification, releasableto = like.classification, like.releasableto
    if classification is None or releasableto is None:
        raise ValueError("an event needs a security label: give like= or both label parts")
    # Every concrete event type declares its ``data``; the Envelope base does not.
    return cls(  # type: ignore[call-arg]
        specversion="1.0",
        id=id,
        source=source,
        time=time,
        classification=classification,
        releasableto=releasableto,
        subject=subject,
        data=data,
    )
