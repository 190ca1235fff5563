"""The gateway with its signature checks and its signer taken away: only to measure, in
``make bench``, what signing costs a directive on its way to a console (with
``loadtests/unsigned_enforcer.py``, whose unsigned releases this gateway delivers). It
delivers whatever is on its topics, signed or not; it is no way to run c2bus.

Run as ``python -m loadtests.unsigned_gateway`` with the gateway's environment.
"""

from __future__ import annotations

import asyncio
import sys

from c2bus.adapters.auth import verifier_for
from c2bus.adapters.lifecycle import run_service
from c2bus.adapters.settings import ServiceSettings
from c2bus.services.gateway.app import Gateway


class Unchecked:
    """A trust store that trusts every record: the checks are what is measured."""

    def check(self, family: str, value: bytes | None, headers: object) -> str | None:
        return None


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    service = Gateway(settings, verifier_for(settings.auth))
    service.intake.trust = Unchecked()  # type: ignore[assignment]
    service.reports.sign_steps = lambda values: [[] for _ in values]
    await service.run(stop)


if __name__ == "__main__":
    sys.exit(run_service("gateway", main))
