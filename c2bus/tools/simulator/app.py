"""``c2bus sim``: publish moving tracks to Kafka, and issue periodic directives from the
command posts of their issuers on the gateway.

The simulator is a sensor feed on Kafka: its principal may write SA and nothing else. Its
directives go where every console's go, through the gateway's ``submit`` request with the
issuing unit's token, so the gateway (not the simulator) puts them on the submitted
topic. Without a gateway (no ``gateway_url``) it publishes SA only."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from c2bus.adapters.auth import SIMULATOR, local_minter
from c2bus.adapters.kafka import new_producer, send_event, start_client
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.settings import ServiceSettings
from c2bus.adapters.topics import TopicNames
from c2bus.core.identity import Identity
from c2bus.core.policy.compiler import CompiledPolicy, load_policy
from c2bus.core.policy.evaluator import PolicyEvaluator
from c2bus.tools.simulator.model import initial_tracks, next_directive, step, track_event
from c2bus.tools.simulator.posts import CommandPosts

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SimOptions:
    tracks: int = 50
    rate_hz: float = 1.0
    directive_every_s: float = 5.0
    duration_s: float | None = None
    seed: int | None = None
    deny_ratio: float = 0.3
    favoured_issuer: str = "JFC-BRUNSSUM"
    #: the gateway's URL: run a command post per unit there, issuing its unit's directives
    #: and acknowledging those addressed to it; without it, SA only
    gateway_url: str | None = None


class Orders:
    """The simulated directives: one every ``directive_every_s``, drawn against the policy
    and issued from the command post of its issuer."""

    def __init__(
        self, posts: CommandPosts, policy: CompiledPolicy, options: SimOptions, source: str
    ) -> None:
        self.posts = posts
        self.evaluator = PolicyEvaluator(policy)
        self.options = options
        self.source = source
        self.rng = random.Random(options.seed)
        self.issued = 0
        self.due = time.monotonic() + min(1.0, options.directive_every_s)

    async def tick(self, now: datetime, now_mono: float) -> None:
        if now_mono < self.due:
            return
        options = self.options
        directive = next_directive(
            self.evaluator,
            self.rng,
            now,
            self.source,
            self.issued + 1,
            deny_ratio=options.deny_ratio,
            favoured_issuer=options.favoured_issuer,
        )
        if await self.posts.submit(directive):
            self.issued += 1
            self.due = now_mono + options.directive_every_s
        else:  # its issuer's post is not connected (yet): draw another shortly
            self.due = now_mono + min(0.5, options.directive_every_s)


async def simulate(
    settings: ServiceSettings,
    options: SimOptions,
    stop: asyncio.Event,
    progress: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """Run until ``stop`` or the duration ends; returns (SA events published, directives
    issued)."""
    policy = load_policy(settings.policy_file.read_bytes())
    topics = TopicNames(settings.kafka.topic_prefix)
    tracks = initial_tracks(options.tracks, random.Random(options.seed))
    source = f"urn:c2bus:sim:{settings.instance}"
    producer = new_producer(settings.kafka, settings.instance, linger_ms=20)
    await start_client(producer, settings.kafka)
    interval = 1.0 / options.rate_hz
    began = last = time.monotonic()
    next_report = began + 5.0
    seq = sa_count = 0
    posts_stop = asyncio.Event()
    posts = _posts(settings, options, policy)
    orders = Orders(posts, policy, options, source) if posts is not None else None
    posts_task = asyncio.create_task(posts.run(posts_stop)) if posts is not None else None
    if progress:
        progress(
            f"{len(posts.posts)} command posts on {options.gateway_url} issue directives and "
            "acknowledge those to their units"
            if posts is not None
            else "no gateway given (--posts URL): SA only, no directives"
        )
    try:
        while not stop.is_set():
            now_mono = time.monotonic()
            if options.duration_s is not None and now_mono - began >= options.duration_s:
                break
            now = datetime.now(UTC)
            dt, last = now_mono - last, now_mono
            seq += 1
            tracks = [step(t, dt) for t in tracks]
            for track in tracks:
                await send_event(producer, topics.sa, track_event(track, now, source, seq))
            sa_count += len(tracks)
            if orders is not None:
                await orders.tick(now, now_mono)
            if progress and now_mono >= next_report:
                issued = orders.issued if orders is not None else 0
                progress(f"published {sa_count} SA events; issued {issued} directives")
                next_report = now_mono + 5.0
            try:
                async with asyncio.timeout(max(0.0, interval - (time.monotonic() - now_mono))):
                    await stop.wait()
            except TimeoutError:
                pass
    finally:
        posts_stop.set()
        if posts_task is not None:
            await bounded("posts.stop", posts_task, settings.shutdown_timeout_s)
        await bounded("producer.stop", producer.stop(), settings.shutdown_timeout_s)
    issued = orders.issued if orders is not None else 0
    log.info("sim.finished", extra={"sa_events": sa_count, "directives": issued})
    return sa_count, issued


def _posts(
    settings: ServiceSettings, options: SimOptions, policy: CompiledPolicy
) -> CommandPosts | None:
    if not options.gateway_url:
        return None
    units = {unit.id: unit.nation for unit in policy.units.values()}
    return CommandPosts(options.gateway_url, units, _minter(settings), random.Random(options.seed))


def _minter(settings: ServiceSettings) -> Callable[[Identity], str]:
    """Tokens for the command posts, signed with the simulator's own local key (it holds no
    other minter's key)."""
    mint = local_minter(settings.auth, SIMULATOR)

    def mint_for(identity: Identity) -> str:
        return mint(identity, 8 * 3600)

    return mint_for
