"""Bad input on each input topic is dead-lettered with Kafka Connect style headers, and the
valid event behind it is still processed."""

from __future__ import annotations

import copy
import json
from typing import Any

from c2bus.adapters.dlq import PREFIX
from c2bus.adapters.topics import TopicNames
from c2bus.core.codec import decode_event
from c2bus.core.events import DecisionEvent
from tests.integration.services import Console, Env, enforcer, event_id, gateway
from tests.integration.test_pipeline import directive, produce, track
from tests.integration.test_roundtrip import consume, read_all


def bad_inputs(valid_example: Any, name: str) -> list[tuple[bytes, bytes]]:
    unlabelled = copy.deepcopy(valid_example(name))
    del unlabelled["classification"]
    del unlabelled["releasableto"]
    return [
        (b"bad-1", b"\x00\xff not json at all"),
        (b"bad-2", b'{"hello": "world", "n": 1}'),
        (b"bad-3", json.dumps(unlabelled).encode()),
    ]


def headers(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def test_bad_records_on_both_input_topics_are_dead_lettered(
    env: Env, topics: TopicNames, valid_example: Any
) -> None:
    async with (
        enforcer(env),
        gateway(env) as gw,
        Console.connect(gw.port, env.token(unit="MNC-NE")) as console,
    ):
        await produce(
            env.kafka,
            topics.sa,
            *bad_inputs(valid_example, "sa-track"),
            (b"TRK-4711", track(valid_example, "good-track", "NATO SECRET", "NATO")),
        )
        await produce(
            env.kafka,
            topics.submitted,
            *bad_inputs(valid_example, "directive"),
            (b"POL-12BDE", directive(valid_example, "good-directive", "MNC-NE", "POL-12BDE")),
        )
        # The valid events behind the bad ones went through.
        await console.events_until(lambda f: event_id(f) == "good-track")
        await console.events_until(lambda f: event_id(f) == "good-directive")

    [decision] = await consume(env.kafka, topics.decisions, 1, f"{env.prefix}-d")
    decided = decode_event(decision.value)
    assert isinstance(decided, DecisionEvent)
    assert decided.data.directive_id == "good-directive"

    letters = await consume(env.kafka, topics.dlq, 6, f"{env.prefix}-dlq")
    originals = {
        (topic, r.key): r
        for topic in (topics.sa, topics.submitted)
        for r in await read_all(env.kafka, topic)
    }
    by_source = {(headers(r)[PREFIX + "topic"], r.key): r for r in letters}
    assert len(by_source) == 6
    for topic, name, stage in (
        (topics.sa, "sa-track", "gateway.decode"),
        (topics.submitted, "directive", "enforcer.decode"),
    ):
        for key, value in bad_inputs(valid_example, name):
            record = by_source[(topic, key)]
            assert record.value == value  # original bytes, original key
            h = headers(record)
            assert h[PREFIX + "stage"] == stage
            assert h[PREFIX + "class.name"] == "InvalidEvent"
            assert h[PREFIX + "exception.class.name"] == "InvalidEvent"
            original = originals[(topic, key)]  # where the bad record was read
            assert h[PREFIX + "topic"] == topic
            assert h[PREFIX + "partition"] == str(original.partition)
            assert h[PREFIX + "offset"] == str(original.offset)
            assert h[PREFIX + "connector.name"] == f"{stage.split('.')[0]}-test"
        unlabelled = headers(by_source[(topic, b"bad-3")])[PREFIX + "exception.message"]
        assert unlabelled == "Object missing required field `classification`"
        garbage = headers(by_source[(topic, b"bad-1")])[PREFIX + "exception.message"]
        assert garbage.startswith("malformed JSON")
