"""The ACL file is data: each role's grants become exactly the bindings it names, for a topic
prefix; a malformed file is refused with its path and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from c2bus.adapters.acls import Binding, Operation, Pattern, Resource, Roles
from c2bus.errors import ConfigError


def test_the_file_grants_each_role_its_topics_groups_and_transactional_ids() -> None:
    bindings = set(Roles.load().bindings("c2"))

    def who(resource: Resource, name: str, op: Operation) -> set[str]:
        return {
            b.principal
            for b in bindings
            if b.resource is resource
            and b.operation is op
            and (b.name == name if b.pattern is Pattern.LITERAL else name.startswith(b.name))
        }

    assert who(Resource.TOPIC, "c2.directives.approved", Operation.WRITE) == {"enforcer"}
    assert who(Resource.TOPIC, "c2.decisions", Operation.WRITE) == {"enforcer"}
    assert who(Resource.TOPIC, "c2.directives.held", Operation.WRITE) == {"enforcer"}
    assert who(Resource.TOPIC, "c2.policy", Operation.WRITE) == {"policy-api"}
    assert who(Resource.TOPIC, "c2.sa", Operation.WRITE) == {"ingest", "simulator"}
    # directives enter at the edges that bind their issuer: the ingest and the gateway
    assert who(Resource.TOPIC, "c2.directives.submitted", Operation.WRITE) == {
        "ingest",
        "gateway",
    }
    simulator = {b for b in bindings if b.principal == "simulator"}
    assert {(b.name, b.operation) for b in simulator} == {
        ("c2.sa", Operation.WRITE),
        ("c2.sa", Operation.DESCRIBE),
    }
    assert who(Resource.TOPIC, "c2.sa", Operation.READ) == {"gateway", "reader"}
    assert who(Resource.GROUP, "c2.enforcer", Operation.READ) == {"enforcer"}
    assert who(Resource.TRANSACTIONAL_ID, "c2.enforcer.p3", Operation.WRITE) == {"enforcer"}
    assert who(Resource.TRANSACTIONAL_ID, "c2.policy.publisher.x", Operation.WRITE) == {
        "policy-api"
    }
    # another prefix is another deployment: nothing of c2's applies to it
    assert not who(Resource.TOPIC, "t1.sa", Operation.READ)
    assert str(Binding("reader", Resource.TOPIC, "c2.", Pattern.PREFIXED, Operation.READ)) == (
        "User:reader READ topic c2.*"
    )


def test_a_sensor_feed_may_write_sa_and_nothing_else() -> None:
    roles = Roles.load()
    added = set(roles.bindings("c2", [("radar-7", "sensor")])) - set(roles.bindings("c2"))
    assert added == {
        Binding("radar-7", Resource.TOPIC, "c2.sa", Pattern.LITERAL, op)
        for op in (Operation.WRITE, Operation.DESCRIBE)
    }
    with pytest.raises(ConfigError, match="no role 'spy'"):
        roles.bindings("c2", [("x", "spy")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("roles: {a: {writes: [sa]}}", "unknown field"),
        ("roles: {a: {write: sa}}", "Expected `array`"),
        ("nothing: here", "unknown field `nothing`"),
        ("{}", "missing required field `roles`"),
    ],
)
def test_a_malformed_file_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "acls.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        Roles.load(path)
    assert str(path) in str(err.value)
