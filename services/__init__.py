"""c2bus: a command-and-control event-streaming backbone on Apache Kafka.

``services.domain`` is the pure core (events, labels, later the policy engine); it does no
I/O. ``services.runtime`` holds the adapters (settings, Kafka clients, topics, the local
broker tooling). Each service lives in its own sub-package; ``services.cli`` is the ``c2bus``
command.
"""

__version__ = "0.1.0"
