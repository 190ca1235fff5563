"""The simulator's command line: ``c2bus sim`` and ``python -m c2bus.tools.simulator`` (how
``c2bus up`` runs it) share these options and this runner."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from c2bus.adapters.lifecycle import stop_on_signals
from c2bus.adapters.settings import ServiceSettings
from c2bus.errors import C2BusError
from c2bus.tools.progress import progress


def add_traffic_options(p: argparse.ArgumentParser) -> None:
    """The options ``c2bus up`` passes on to the simulator."""
    p.add_argument("--tracks", type=int, default=50, help="moving tracks (50)")
    p.add_argument("--rate", type=float, default=1.0, help="updates per track per second (1)")
    p.add_argument(
        "--directive-every",
        type=float,
        default=5.0,
        metavar="S",
        help="issue a directive every S seconds from its issuer's command post (5; needs --posts)",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_traffic_options(p)
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S")
    p.add_argument("--seed", type=int, default=None, help="random seed (repeatable runs)")
    p.add_argument(
        "--posts",
        default=None,
        metavar="URL",
        help="run a command post per unit on the gateway at URL (e.g. ws://127.0.0.1:8765): "
        "the posts issue the simulated directives and acknowledge those addressed to their "
        "units (WILCO, then HAVE_DO); without it the simulator publishes SA only",
    )


def run(args: argparse.Namespace) -> int:
    """Publish until Ctrl-C, SIGTERM or ``--duration``; C2BusError propagates."""
    from c2bus.tools.simulator.app import SimOptions, simulate  # noqa: PLC0415  (aiokafka)

    settings = ServiceSettings.from_env("simulator")
    options = SimOptions(
        tracks=args.tracks,
        rate_hz=args.rate,
        directive_every_s=args.directive_every,
        duration_s=args.duration,
        seed=args.seed,
        gateway_url=args.posts,
    )

    async def simulate_until_stopped() -> tuple[int, int]:
        stop = stop_on_signals()
        progress(
            f"simulating {options.tracks} tracks at {options.rate_hz:g} Hz into "
            f"{settings.kafka.bootstrap} (topics '{settings.kafka.topic_prefix}.')"
            + (
                f" and a directive every {options.directive_every_s:g}s"
                if options.gateway_url
                else ""
            )
            + "; Ctrl-C stops"
        )
        return await simulate(settings, options, stop, progress)

    sa, directives = asyncio.run(simulate_until_stopped())
    progress(f"done: {sa} SA events published, {directives} directives issued")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m c2bus.tools.simulator",
        description="publish simulated tracks and directives to Kafka (as c2bus sim)",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return run(args)
    except C2BusError as exc:
        progress(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
