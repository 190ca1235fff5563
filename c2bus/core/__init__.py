"""The pure core of c2bus: events, security labels, the console protocol, the held-state
codec and the alignment-policy engine.

Nothing in this package performs I/O or imports asyncio, aiokafka, websockets or FastAPI
(``make lint`` checks it). Adapters in ``c2bus.adapters`` and the services feed it bytes and
carry out what it decides.
"""
