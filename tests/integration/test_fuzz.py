"""Random and mutated records on every input topic, against a real enforcer and gateway on
real Kafka: nothing crashes, and every record on the submitted topic is accounted for,
exactly once: decided (ALLOW, DENY or HOLD: one decision record each) or dead-lettered.

Hypothesis draws the records: random bytes, random JSON, the valid example of each topic's
events truncated, with bytes flipped, with one field deleted or replaced by random JSON,
nested deeply, or left valid. Each example restarts both services, so the accounting also
holds across restarts (it is kept over all the examples).
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from c2bus.adapters.dlq import PREFIX
from c2bus.adapters.kafka import client_options
from c2bus.adapters.topics import TopicNames
from tests.integration.services import Console, Env, enforcer, event_id, gateway
from tests.integration.test_roundtrip import read_all

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
DELETE = object()
#: records written to each topic so far, by the environment's topic prefix
WRITTEN: dict[str, dict[str, int]] = {}


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document, as the keys and indices leading to it."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths(value, (*prefix, index))
    return found


def mutated(example: dict[str, Any]) -> st.SearchStrategy[bytes]:
    raw = json.dumps(example).encode()

    def flip(edits: list[tuple[int, int]]) -> bytes:
        data = bytearray(raw)
        for at, byte in edits:
            data[at] = byte
        return bytes(data)

    def field(path: tuple[Any, ...], value: Any) -> bytes:
        doc = copy.deepcopy(example)
        *parents, last = path
        node: Any = doc
        for step in parents:
            node = node[step]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
        return json.dumps(doc).encode()

    return st.one_of(
        st.binary(max_size=300),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.integers(0, len(raw) - 1).map(lambda n: raw[:n]),
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1).map(
            flip
        ),
        st.builds(field, st.sampled_from(paths(example)), JSON | st.just(DELETE)),
        st.integers(100, 20_000).map(lambda n: b"[" * n + b"]" * n),
        st.just(raw),
    )


def fresh(valid_example: Any, name: str) -> dict[str, Any]:
    """The valid example of ``name``, with a new id and dated now (valid for an hour)."""
    doc = copy.deepcopy(valid_example(name))
    now = datetime.now(UTC)
    doc["id"] = f"fz-{uuid.uuid4().hex[:12]}"
    doc["time"] = now.isoformat()
    if "expires" in doc.get("data", {}):
        doc["data"]["expires"] = (now + timedelta(hours=1)).isoformat()
        doc["data"].pop("valid_from", None)
    return doc


async def write(env: Env, records: list[tuple[str, bytes]]) -> None:
    """Write (topic, value) records as the admin: whoever holds a credential that may."""
    producer = AIOKafkaProducer(**client_options(env.kafka), acks="all", linger_ms=5)
    await producer.start()
    try:
        for n, (topic, value) in enumerate(records):
            await producer.send(topic, value, key=f"k{n % 7}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def accounted(env: Env, topics: TopicNames) -> tuple[int, int]:
    """(decision records, dead letters of submitted records) on Kafka now."""
    decisions = await read_all(env.kafka, topics.decisions)
    letters = await read_all(env.kafka, topics.dlq)
    from_submitted = [
        r for r in letters if dict(r.headers).get(PREFIX + "topic") == topics.submitted.encode()
    ]
    return len(decisions), len(from_submitted)


@settings(
    max_examples=5,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),  # one Kafka environment serves every example
)
@given(data=st.data())
async def test_random_and_mutated_records_on_every_input_topic(
    env: Env, topics: TopicNames, valid_example: Any, data: st.DataObject
) -> None:
    directive = fresh(valid_example, "directive")
    inputs = {
        topics.submitted: st.one_of(
            mutated(directive), mutated(fresh(valid_example, "directive-approval"))
        ),
        topics.sa: mutated(fresh(valid_example, "sa-track")),
        topics.approved: mutated(directive | {"decisionid": f"decision:{directive['id']}"}),
        topics.decisions: mutated(fresh(valid_example, "decision")),
        topics.status: mutated(fresh(valid_example, "directive-status")),
        topics.policy: mutated(fresh(valid_example, "policy-set")),
    }
    records = [
        (topic, value)
        for topic, strategy in inputs.items()
        for value in data.draw(st.lists(strategy, min_size=20, max_size=60), label=topic)
    ]
    data.draw(st.randoms(use_true_random=False)).shuffle(records)
    # one directive known to be valid, after the rest: proof the enforcer still decides
    last = json.dumps(fresh(valid_example, "directive")).encode()
    records.append((topics.submitted, last))
    # Counted over every example this environment has seen: a record an earlier example's
    # services left unconsumed is counted by the services of the next.
    written = WRITTEN.setdefault(env.prefix, {})
    for topic, _ in records:
        written[topic] = written.get(topic, 0) + 1
    submitted = written[topics.submitted]
    probe = fresh(valid_example, "sa-track")

    async with (
        enforcer(env),
        gateway(env) as gw,
        Console.connect(gw.port, env.token(unit="JFC-BRUNSSUM"), ("sa",)) as console,
    ):
        await write(env, records)
        async with asyncio.timeout(90):
            while True:
                decided, dead = await accounted(env, topics)
                decided -= written.get(topics.decisions, 0)  # the fuzz's own, not decisions
                count = decided + dead
                assert count <= submitted, (decided, dead, submitted)  # never twice
                if count == submitted:
                    break
                await asyncio.sleep(0.5)
        # the gateway came through it: the same session still gets what follows
        await write(env, [(topics.sa, json.dumps(probe).encode())])
        await console.events_until(lambda f: event_id(f) == probe["id"])
        assert gw.ready
