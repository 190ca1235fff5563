"""The tools people run: the ``c2bus`` command (``cli``), ``up``, ``trace``, the terminal
console, the simulator, and the local Kafka and Prometheus tooling. They may use everything
below them; nothing below imports a tool."""
