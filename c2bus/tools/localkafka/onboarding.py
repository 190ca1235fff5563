"""Onboarding: a principal added to a role of ``deploy/kafka/acls.yaml`` gets a SCRAM
credential, the role's ACLs and a client configuration in one command; removed, it loses
all three.

Added principals are recorded in ``<secrets>/principals.json`` (principal → role), so
``c2bus topics create``, ``c2bus kafka acls apply`` and a reset cluster's formatting include
them. The credential is set with Kafka's own ``kafka-configs`` (``ConfigCommand``), as the
admin; the ACLs with CreateAcls and DeleteAcls, like every other grant.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
from pathlib import Path

from c2bus.adapters.acls import Roles, grant, revoke
from c2bus.adapters.kafka import java_client_config
from c2bus.adapters.settings import KafkaSettings
from c2bus.errors import ConfigError, LocalKafkaError
from c2bus.tools.localkafka.secrets import ADMIN, BROKER, LocalSecrets, write_secret
from c2bus.tools.localkafka.toolchain import Toolchain

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
REGISTRY = "principals.json"


def registered(secrets_dir: Path) -> dict[str, str]:
    """The principals added with ``c2bus kafka principal add``, by name: their roles."""
    try:
        doc = json.loads((secrets_dir / REGISTRY).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{secrets_dir / REGISTRY} is unreadable: {exc}") from None
    return {str(k): str(v) for k, v in doc.items()}


def _record(secrets_dir: Path, principals: dict[str, str]) -> None:
    write_secret(secrets_dir / REGISTRY, json.dumps(principals, indent=2, sort_keys=True).encode())


class Onboarding:
    """Adds and removes principals of one cluster, as its admin."""

    def __init__(self, admin: KafkaSettings, secrets_dir: Path, toolchain: Toolchain) -> None:
        self.admin = admin
        self.secrets = LocalSecrets(secrets_dir)
        self.toolchain = toolchain

    def check_new(self, name: str, role: str) -> None:
        roles = Roles.load()
        roles.role(role)  # a clear error for a role the file does not have
        if not _NAME.match(name):
            raise ConfigError(
                f"principal name {name!r} is invalid: use 1-64 lower-case letters, digits, "
                "'.', '_' or '-'"
            )
        taken = {ADMIN, BROKER, *roles.principals(), *registered(self.secrets.dir)}
        if name in taken:
            raise ConfigError(f"principal {name!r} exists already: remove it first")

    async def add(self, name: str, role: str, prefix: str) -> int:
        """Create ``name``'s credential, grant ``role``'s ACLs for ``prefix``; returns how
        many ACLs were granted."""
        self.check_new(name, role)
        self.secrets.ensure([name])
        self._scram("--add-config", f"SCRAM-SHA-512=[password={self.secrets.password(name)}]", name)
        added = {**registered(self.secrets.dir), name: role}
        _record(self.secrets.dir, added)
        bindings = await grant(self.admin, prefix, [(name, role)])
        return sum(b.principal == name for b in bindings)

    async def remove(self, name: str) -> int:
        """Revoke every ACL of ``name`` and delete its credential; returns the ACLs revoked."""
        added = registered(self.secrets.dir)
        if name not in added:
            raise ConfigError(
                f"principal {name!r} was not added with `c2bus kafka principal add`: "
                "principals of the ACL file are changed in the file"
            )
        revoked = await revoke(self.admin, name)
        self._scram("--delete-config", "SCRAM-SHA-512", name)
        del added[name]
        _record(self.secrets.dir, added)
        self.secrets.password_file(name).unlink(missing_ok=True)
        return revoked

    def _scram(self, action: str, value: str, name: str) -> None:
        """Run Kafka's ConfigCommand on ``name``'s SCRAM credential, as the admin (its client
        configuration in a file readable by the owner only, removed afterwards)."""
        config = self.secrets.dir / f".admin-{secrets.token_hex(4)}.properties"
        props = "".join(f"{k}={v}\n" for k, v in java_client_config(self.admin).items())
        write_secret(config, props.encode())
        command = [
            str(self.toolchain.java),
            "-Xmx256m",
            "-cp",
            self.toolchain.classpath,
            "org.apache.kafka.tools.ConfigCommand",
            "--bootstrap-server",
            self.admin.bootstrap,
            "--command-config",
            str(config),
            "--alter",
            action,
            value,
            "--entity-type",
            "users",
            "--entity-name",
            name,
        ]
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        finally:
            with contextlib.suppress(OSError):
                config.unlink()
        if out.returncode != 0:
            lines = [ln for ln in (out.stderr + out.stdout).splitlines() if ln.strip()]
            detail = lines[-1] if lines else f"exit status {out.returncode}"
            raise LocalKafkaError(f"setting the credential of {name!r} failed: {detail[:300]}")
