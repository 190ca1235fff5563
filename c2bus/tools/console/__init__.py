"""``c2bus console``: a terminal command console on the gateway's c2bus.v1 protocol."""
