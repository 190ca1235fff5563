"""The error tree: every class is drawn in ``errors.py``'s docstring, Kafka's errors come out
of the adapter as c2bus errors carrying ``retriable`` and ``fenced``, and a refusal knows its
HTTP status."""

from __future__ import annotations

import inspect

import pytest
from aiokafka.errors import (
    IllegalOperation,
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaTimeoutError,
    ProducerFenced,
    UnknownTopicOrPartitionError,
)

from c2bus import errors
from c2bus.adapters.kafka import is_fencing, kafka_step
from c2bus.errors import KafkaError, ProducerFencedOut, Refused


def test_the_drawn_tree_lists_every_class() -> None:
    classes = [
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, Exception)
    ]
    tree = (errors.__doc__ or "").split("The tree::")[1].split("Library exceptions")[0]
    lines = [line.strip() for line in tree.splitlines() if line.strip()]
    root, branches = lines[0], [line for line in lines[1:] if line.lstrip("│ ")[:1] in "├└"]
    drawn = {root, *(line.lstrip("│ ├└─").split()[0] for line in branches)}
    assert sorted(drawn) == sorted(classes)


def translated(exc: BaseException) -> KafkaError:
    with pytest.raises(KafkaError) as raised, kafka_step("commit"):
        raise exc
    assert raised.value.__cause__ is exc
    return raised.value


@pytest.mark.parametrize("fence", [ProducerFenced(), InvalidProducerEpoch()])
def test_a_fence_is_fenced_and_not_retriable(fence: BaseException) -> None:
    error = translated(fence)
    assert isinstance(error, ProducerFencedOut)
    assert error.fenced and not error.retriable and error.cause == "ProducerFenced"
    assert is_fencing(fence) and is_fencing(error)


@pytest.mark.parametrize(
    ("library", "retriable", "cause"),
    [
        (KafkaTimeoutError(), True, "KafkaTimeoutError"),
        (KafkaConnectionError("gone"), True, "KafkaConnectionError"),
        (UnknownTopicOrPartitionError(), True, "UnknownTopicOrPartitionError"),
        (TimeoutError(), True, "TimeoutError"),
        (ConnectionResetError(), True, "ConnectionResetError"),
        (IllegalOperation("no transaction"), False, "IllegalOperation"),
    ],
)
def test_other_failures_say_whether_to_retry(
    library: BaseException, retriable: bool, cause: str
) -> None:
    error = translated(library)
    assert (error.retriable, error.fenced, error.cause) == (retriable, False, cause)
    assert str(error).startswith("commit failed: ")
    assert not is_fencing(library) and not is_fencing(None)


def test_errors_that_are_ours_or_bugs_pass_through() -> None:
    ours = KafkaError("already ours")
    with pytest.raises(KafkaError) as raised, kafka_step("send"):
        raise ours
    assert raised.value is ours
    with pytest.raises(ZeroDivisionError), kafka_step("send"):
        _ = 1 / 0


def test_a_refusal_knows_its_status_and_refuses_unknown_codes() -> None:
    refused = Refused("invalid", "invalid event", problems=[{"path": "$", "reason": "x"}])
    assert (refused.http_status, refused.problems, str(refused)) == (
        422,
        [{"path": "$", "reason": "x"}],
        "invalid event",
    )
    assert Refused("rate_limited", "slow down", retry_after_ms=200).fields == {
        "retry_after_ms": 200
    }
    with pytest.raises(ValueError, match="unknown refusal code"):
        Refused("teapot", "no")
