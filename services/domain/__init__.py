"""The pure core of c2bus: events, security labels, and (later) the policy engine.

Nothing in this package performs I/O or imports asyncio, aiokafka, websockets or FastAPI.
Adapters in ``services.runtime`` and the services feed it bytes and carry out what it decides.
"""
