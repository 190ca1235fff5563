"""Kafka ACLs from the roles in ``deploy/kafka/acls.yaml``: what each principal may do, as
bindings for one topic prefix, applied to and read from the cluster's StandardAuthorizer
with Kafka's own CreateAcls and DescribeAcls requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import msgspec
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.protocol.admin import CreateAclsRequest_v1, DeleteAclsRequest, DescribeAclsRequest
from aiokafka.protocol.api import Request

from c2bus.adapters.kafka import bootstrap, client_options
from c2bus.adapters.settings import KafkaSettings, project_root
from c2bus.errors import ConfigError, KafkaError

ACL_FILE = project_root() / "deploy" / "kafka" / "acls.yaml"


class Resource(IntEnum):  # Kafka's ResourceType codes
    TOPIC = 2
    GROUP = 3
    TRANSACTIONAL_ID = 5


class Pattern(IntEnum):  # PatternType
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):  # AclOperation
    READ = 3
    WRITE = 4
    DESCRIBE = 8


ALLOW = 3  # AclPermissionType.ALLOW
ANY_HOST = "*"
_OPERATIONS = {
    "read": (Resource.TOPIC, (Operation.READ, Operation.DESCRIBE)),
    "write": (Resource.TOPIC, (Operation.WRITE, Operation.DESCRIBE)),
    "groups": (Resource.GROUP, (Operation.READ,)),
    "transactional_ids": (Resource.TRANSACTIONAL_ID, (Operation.WRITE, Operation.DESCRIBE)),
}


@dataclass(frozen=True, slots=True, order=True)
class Binding:
    """One ACL: ``principal`` may do ``operation`` on the resource (any host)."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation

    def __str__(self) -> str:
        star = "*" if self.pattern is Pattern.PREFIXED else ""
        what = self.resource.name.lower().replace("_", "-")
        return f"User:{self.principal} {self.operation.name} {what} {self.name}{star}"


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    description: str
    principals: tuple[str, ...]
    grants: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def bindings(self, prefix: str, principal: str) -> list[Binding]:
        """What ``principal`` may do in this role, for topics under ``prefix``."""
        out: list[Binding] = []
        for kind, names in self.grants.items():
            resource, operations = _OPERATIONS[kind]
            for name in names:
                full, pattern = _resolve(prefix, name)
                out.extend(Binding(principal, resource, full, pattern, op) for op in operations)
        return out


class _RoleEntry(msgspec.Struct, forbid_unknown_fields=True):
    description: str = ""
    principals: list[str] = []
    read: list[str] = []
    write: list[str] = []
    groups: list[str] = []
    transactional_ids: list[str] = []


class _AclFile(msgspec.Struct, forbid_unknown_fields=True):
    roles: dict[str, _RoleEntry]


@dataclass(frozen=True, slots=True)
class Roles:
    roles: dict[str, Role]

    @classmethod
    def load(cls, path: Path = ACL_FILE) -> Roles:
        try:
            doc = msgspec.yaml.decode(path.read_bytes(), type=_AclFile)
        except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ConfigError(f"the Kafka ACL file {path} is unusable: {exc}") from None
        roles = {}
        for name, entry in doc.roles.items():
            grants = {
                kind: tuple(getattr(entry, kind)) for kind in _OPERATIONS if getattr(entry, kind)
            }
            roles[name] = Role(name, entry.description, tuple(entry.principals), grants)
        return cls(roles)

    def role(self, name: str) -> Role:
        try:
            return self.roles[name]
        except KeyError:
            raise ConfigError(
                f"no role {name!r} in {ACL_FILE.name}: use one of {', '.join(self.roles)}"
            ) from None

    def principals(self) -> list[str]:
        """Every principal the file names, in order."""
        seen: dict[str, None] = {}
        for role in self.roles.values():
            seen.update(dict.fromkeys(role.principals))
        return list(seen)

    def bindings(self, prefix: str, extra: Iterable[tuple[str, str]] = ()) -> list[Binding]:
        """Every binding for topics under ``prefix``: the file's principals, and ``extra``
        (principal, role) pairs added since."""
        pairs = [(p, r) for r in self.roles.values() for p in r.principals]
        pairs += [(p, self.role(r)) for p, r in extra]
        return sorted({b for p, role in pairs for b in role.bindings(prefix, p)})


def _resolve(prefix: str, name: str) -> tuple[str, Pattern]:
    if name == "*":
        return f"{prefix}.", Pattern.PREFIXED
    if name.endswith("*"):
        return f"{prefix}.{name[:-1]}", Pattern.PREFIXED
    return f"{prefix}.{name}", Pattern.LITERAL


async def apply(kafka: KafkaSettings, bindings: list[Binding]) -> int:
    """Create ``bindings`` on the cluster (creating one that exists changes nothing);
    returns how many were sent."""
    if not bindings:
        return 0
    creations = [
        (b.resource, b.name, b.pattern, f"User:{b.principal}", ANY_HOST, b.operation, ALLOW)
        for b in bindings
    ]
    response = await _send(kafka, _CreateAcls(creations))
    failed = [
        (bindings[i], code, message)
        for i, (code, message) in enumerate(response.creation_responses)
        if code
    ]
    if failed:
        binding, code, message = failed[0]
        raise KafkaError(
            f"creating {len(failed)} ACL(s) failed, first {binding} (error {code}: {message})"
        )
    return len(bindings)


async def grant(
    kafka: KafkaSettings, prefix: str, extra: Iterable[tuple[str, str]] = (), timeout_s: float = 30
) -> list[Binding]:
    """Apply the ACL file's roles for topics under ``prefix`` (and ``extra`` principal/role
    pairs), then wait until every broker enforces them (brokers learn of new ACLs from the
    metadata log, a moment after they are created); returns the bindings."""
    bindings = Roles.load().bindings(prefix, extra)
    await apply(kafka, bindings)
    wanted = set(bindings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        seen = await _describe_each(kafka, prefix)
        if all(wanted <= found for found in seen):
            return bindings
        if loop.time() > deadline:
            raise KafkaError(f"the ACLs for {prefix}. did not reach every broker in {timeout_s:g}s")
        await asyncio.sleep(0.1)


async def revoke(kafka: KafkaSettings, principal: str) -> int:
    """Delete every ACL of ``principal``, on any resource; returns how many went."""
    # any resource type, any name, any pattern type, this principal, any host/op/permission
    request = DeleteAclsRequest(1, None, 1, f"User:{principal}", None, 1, 1)
    response = await _send(kafka, request)
    deleted = 0
    for code, message, matching in response.filter_responses:
        if code:
            raise KafkaError(f"deleting the ACLs of {principal} failed (error {code}): {message}")
        deleted += len(matching)
    return deleted


async def describe(kafka: KafkaSettings, prefix: str) -> list[Binding]:
    """The ALLOW bindings on the cluster for resources under ``prefix``."""
    return sorted((await _describe_each(kafka, prefix, first_only=True))[0])


async def _describe_each(
    kafka: KafkaSettings, prefix: str, first_only: bool = False
) -> list[set[Binding]]:
    """The bindings under ``prefix`` as each broker (or just one) enforces them."""
    client = AIOKafkaClient(**client_options(kafka))
    try:
        await bootstrap(client)
        nodes = [b.nodeId for b in client.cluster.brokers()]
        # any resource type, name, pattern type, principal, host, operation and permission
        request = DescribeAclsRequest(1, None, 1, None, None, 1, 1)
        chosen = nodes[:1] if first_only else nodes
        return [_bindings(await client.send(n, request), prefix) for n in chosen]
    except AioKafkaError as exc:
        raise KafkaError(f"describing the ACLs failed: {exc!r}") from exc
    finally:
        await client.close()


def _bindings(response: Any, prefix: str) -> set[Binding]:
    if response.error_code:
        raise KafkaError(
            f"describing ACLs failed (error {response.error_code}): {response.error_message}"
        )
    out: set[Binding] = set()
    for resource, name, pattern, acls in response.resources:
        if not name.startswith(f"{prefix}.") or resource not in Resource._value2member_map_:
            continue
        for principal, _host, operation, permission in acls:
            if permission == ALLOW and operation in Operation._value2member_map_:
                out.add(
                    Binding(
                        principal.removeprefix("User:"),
                        Resource(resource),
                        name,
                        Pattern(pattern),
                        Operation(operation),
                    )
                )
    return out


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    """CreateAcls with many creations in one request (aiokafka's builder takes one)."""

    API_KEY = 30

    def __init__(self, creations: list[tuple[Any, ...]]) -> None:
        self.creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self.creations)


async def _send(kafka: KafkaSettings, request: Any) -> Any:
    client = AIOKafkaClient(**client_options(kafka))
    try:
        await bootstrap(client)
        node = client.get_random_node()
        return await client.send(node, request)
    except AioKafkaError as exc:
        raise KafkaError(f"the ACL request failed: {exc!r}") from exc
    finally:
        await client.close()
