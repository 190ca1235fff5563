"""What the policy API pays for working a caller's document out in its worker process.

    .venv/bin/python -m loadtests.policy_worker [--rounds R] [--calls N]

Validates the reference policy (deploy/policies/alliance.yaml) the way the policy API
does, alternately in this process (the baseline: what it cost before, on the event loop)
and through ``adapters.worker`` (pickled to a process of its own and back), in the same
run, and prints both medians and their ratio. The worker's price buys an event loop that
never waits on a document and a time limit that stops one.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from c2bus.adapters.settings import project_root
from c2bus.adapters.worker import Worker
from c2bus.services.policy_api import work


async def measure(rounds: int, calls: int) -> tuple[float, float]:
    raw = (project_root() / "deploy" / "policies" / "alliance.yaml").read_bytes()
    worker = Worker("bench", 10)
    await worker.start()
    direct: list[float] = []
    via: list[float] = []
    try:
        for _ in range(rounds):
            for _ in range(calls):
                start = time.perf_counter()
                work.checked(raw)
                direct.append(time.perf_counter() - start)
                start = time.perf_counter()
                await worker.run(work.checked, raw)
                via.append(time.perf_counter() - start)
    finally:
        await worker.close()
    return statistics.median(direct), statistics.median(via)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    direct, via = asyncio.run(measure(args.rounds, args.calls))
    print(
        f"validate the reference policy: in process {direct * 1e3:.2f} ms, in the worker "
        f"{via * 1e3:.2f} ms (medians of {args.rounds * args.calls}, same run); "
        f"ratio {via / direct:.2f}"
    )


if __name__ == "__main__":
    main()
