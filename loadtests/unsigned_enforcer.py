"""The enforcer with its signer taken away: only to measure, in ``make bench``, what signing
its decisions and approved directives costs. Nothing it approves reaches a console (the
gateway delivers only what a trusted key signed); it is no way to run c2bus.

Run as ``python -m loadtests.unsigned_enforcer`` with the enforcer's environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys

from c2bus.adapters.lifecycle import run_service
from c2bus.adapters.settings import ServiceSettings
from c2bus.services.enforcer.app import Enforcer


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    service = Enforcer(settings)
    service.outputs = dataclasses.replace(service.outputs, signer=None)
    await service.run(stop)


if __name__ == "__main__":
    sys.exit(run_service("enforcer", main))
