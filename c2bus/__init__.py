"""c2bus: a command-and-control event-streaming backbone on Apache Kafka.

The package is layered; each layer imports only those below it (``make lint`` holds this):

- ``c2bus.tools``: what people run (the ``c2bus`` command, ``up``, ``trace``, the console,
  the simulator, the local Kafka and Prometheus tooling);
- ``c2bus.services``: the enforcer, gateway, ingest and policy API, independent of each other;
- ``c2bus.adapters``: shared I/O (settings, Kafka clients and topics, auth, metrics, ops);
- ``c2bus.core``: the pure core (events, labels, the console protocol, the policy engine),
  which does no I/O;
- ``c2bus.errors``: the exception tree.
"""

__version__ = "0.1.0"
