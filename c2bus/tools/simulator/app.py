"""``c2bus sim``: publish moving tracks and periodic directives straight to Kafka."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from c2bus.adapters.auth import load_or_create_key, mint
from c2bus.adapters.kafka import new_producer, send_event, start_client
from c2bus.adapters.lifecycle import bounded
from c2bus.adapters.settings import ServiceSettings
from c2bus.adapters.topics import TopicNames
from c2bus.core.identity import Identity
from c2bus.core.policy.compiler import CompiledPolicy, load_policy
from c2bus.core.policy.evaluator import PolicyEvaluator
from c2bus.tools.simulator.model import initial_tracks, next_directive, step, track_event
from c2bus.tools.simulator.posts import run_posts

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
    #: the gateway's URL: run a command post per unit there, acknowledging its directives
    gateway_url: str | None = None


async def simulate(
    settings: ServiceSettings,
    options: SimOptions,
    stop: asyncio.Event,
    progress: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """Run until ``stop`` or the duration ends; returns (SA events, directives) published."""
    policy = load_policy(settings.policy_file.read_bytes())
    evaluator = PolicyEvaluator(policy)
    topics = TopicNames(settings.kafka.topic_prefix)
    rng = random.Random(options.seed)
    tracks = initial_tracks(options.tracks, rng)
    source = f"urn:c2bus:sim:{settings.instance}"
    producer = new_producer(settings.kafka, settings.instance, linger_ms=20)
    await start_client(producer, settings.kafka)
    interval = 1.0 / options.rate_hz
    began = last = time.monotonic()
    next_directive_at = began + min(1.0, options.directive_every_s)
    next_report = began + 5.0
    seq = sa_count = directive_count = 0
    posts_stop = asyncio.Event()
    posts = _start_posts(settings, options, policy, posts_stop, progress)
    try:
        while not stop.is_set():
            now_mono = time.monotonic()
            if options.duration_s is not None and now_mono - began >= options.duration_s:
                break
            now = datetime.now(UTC)
            dt = now_mono - last
            last = now_mono
            seq += 1
            tracks = [step(t, dt) for t in tracks]
            for track in tracks:
                event = track_event(track, now, source, seq)
                await send_event(producer, topics.sa, event)
            sa_count += len(tracks)
            if now_mono >= next_directive_at:
                directive_count += 1
                directive = next_directive(
                    evaluator,
                    rng,
                    now,
                    source,
                    directive_count,
                    deny_ratio=options.deny_ratio,
                    favoured_issuer=options.favoured_issuer,
                )
                await send_event(producer, topics.submitted, directive)
                next_directive_at = now_mono + options.directive_every_s
            if progress and now_mono >= next_report:
                progress(f"published {sa_count} SA events and {directive_count} directives")
                next_report = now_mono + 5.0
            try:
                async with asyncio.timeout(max(0.0, interval - (time.monotonic() - now_mono))):
                    await stop.wait()
            except TimeoutError:
                pass
    finally:
        posts_stop.set()
        if posts is not None:
            await bounded("posts.stop", posts, settings.shutdown_timeout_s)
        await bounded("producer.stop", producer.stop(), settings.shutdown_timeout_s)
    log.info("sim.finished", extra={"sa_events": sa_count, "directives": directive_count})
    return sa_count, directive_count


def _start_posts(
    settings: ServiceSettings,
    options: SimOptions,
    policy: CompiledPolicy,
    stop: asyncio.Event,
    progress: Callable[[str], None] | None,
) -> asyncio.Task[int] | None:
    if not options.gateway_url:
        return None
    units = {unit.id: unit.nation for unit in policy.units.values()}
    rng = random.Random(options.seed)
    task = asyncio.create_task(run_posts(options.gateway_url, units, _minter(settings), stop, rng))
    if progress:
        progress(f"{len(units)} command posts acknowledge directives on {options.gateway_url}")
    return task


def _minter(settings: ServiceSettings) -> Callable[[Identity], str]:
    """Tokens for the command posts, signed with the local development key."""
    key = load_or_create_key(settings.auth.key_file)
    auth = settings.auth

    def mint_for(identity: Identity) -> str:
        return mint(key, identity, audience=auth.audience, issuer=auth.issuer, ttl_s=8 * 3600)

    return mint_for
