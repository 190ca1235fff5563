"""The four services, each a sub-package with ``python -m c2bus.services.<name>``:
``enforcer`` decides every directive, ``gateway`` fans out to consoles, ``ingest`` takes
events over HTTP, ``policy_api`` validates and publishes policies. They share the adapters
and the core, never each other."""
