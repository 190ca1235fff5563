"""Each local node's files: its configuration rendered from ``deploy/kafka/config``, and its
storage, formatted once with the cluster id and a SCRAM credential for every principal."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path
from string import Template

from c2bus.adapters.acls import Roles
from c2bus.adapters.settings import LocalKafkaSettings
from c2bus.errors import LocalKafkaError
from c2bus.tools.localkafka.onboarding import registered
from c2bus.tools.localkafka.secrets import ADMIN, BROKER, LocalSecrets, write_secret
from c2bus.tools.localkafka.toolchain import Toolchain


def principals(added: Iterable[str] = ()) -> list[str]:
    """Every principal the local cluster has a credential for: the brokers, the operators'
    admin, each principal of the ACL file's roles, and ``added`` ones."""
    return list(dict.fromkeys([BROKER, ADMIN, *Roles.load().principals(), *added]))


def new_cluster_id() -> str:
    """A random KRaft cluster id (URL-safe base64 of a UUID, as Kafka's own tool makes)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


class NodeFiles:
    """The configuration and storage of one cluster's nodes, under its directory."""

    def __init__(
        self, settings: LocalKafkaSettings, nodes: int, directory: Path, secrets: LocalSecrets
    ) -> None:
        self.settings = settings
        self.nodes = nodes
        self.dir = directory
        self.secrets = secrets

    def node_dir(self, node_id: int) -> Path:
        return self.dir / f"node-{node_id}"

    def _open_listener(self, node_id: int) -> dict[str, str]:
        """The template's extra listener: none, unless C2BUS_KAFKA_PLAINTEXT_PORT asks for
        an open one (anonymous super users: for measuring the cost of security only)."""
        base = self.settings.plaintext_port
        if base is None:
            return dict.fromkeys(("extra_listeners", "extra_protocols", "extra_super_users"), "")
        return {
            "extra_listeners": f",OPEN://{self.settings.host}:{base + node_id - 1}",
            "extra_protocols": ",OPEN:PLAINTEXT",
            "extra_super_users": ";User:ANONYMOUS",
        }

    def properties_path(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.properties"

    def node_ids(self) -> range:
        return range(1, self.nodes + 1)

    def check_secured(self, node_id: int) -> None:
        """A node still running with the configuration from before the local Kafka was
        secured cannot be reached by the secured clients: say so, rather than time out."""
        try:
            secured = "sasl.enabled.mechanisms" in self.properties_path(node_id).read_text()
        except OSError:
            secured = False
        if not secured:
            raise LocalKafkaError(
                f"node {node_id} runs a configuration from before the local Kafka was secured: "
                "run `c2bus kafka stop` and `c2bus kafka reset`, then start it again"
            )

    def cluster_id(self) -> str:
        """The stored cluster id, checked against every node's formatted storage."""
        id_file = self.dir / "cluster.id"
        found: dict[int, str] = {}
        for node_id in self.node_ids():
            meta = self.node_dir(node_id) / "data" / "meta.properties"
            if meta.is_file():
                cid = read_properties(meta).get("cluster.id")
                if cid:
                    found[node_id] = cid
        if id_file.is_file():
            cluster_id = id_file.read_text(encoding="utf-8").strip()
        elif found:
            cluster_id = found[min(found)]  # adopt the storage we find
        else:
            cluster_id = new_cluster_id()
        for node_id, cid in found.items():
            if cid != cluster_id:
                raise LocalKafkaError(
                    f"data directory {self.node_dir(node_id) / 'data'} belongs to Kafka cluster "
                    f"{cid}, not {cluster_id}: run `c2bus kafka reset` to wipe local Kafka data"
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(cluster_id + "\n", encoding="utf-8")
        return cluster_id

    def render(self, node_id: int) -> None:
        name = "single-node.properties" if self.nodes == 1 else "three-node.properties"
        template = self.settings.deploy_dir / "kafka" / "config" / name
        try:
            text = template.read_text(encoding="utf-8")
        except OSError as exc:
            raise LocalKafkaError(f"cannot read the broker config template {template}") from exc
        host = self.settings.host
        voters = ",".join(
            f"{i}@{host}:{self.settings.controller_port(i - 1)}" for i in self.node_ids()
        )
        node = self.node_dir(node_id)
        (node / "logs").mkdir(parents=True, exist_ok=True)
        try:
            rendered = Template(text).substitute(
                node_id=node_id,
                voters=voters,
                host=host,
                broker_port=self.settings.broker_port(node_id - 1),
                controller_port=self.settings.controller_port(node_id - 1),
                mtls_port=self.settings.mtls_port(node_id - 1),
                **self._open_listener(node_id),
                data_dir=node / "data",
                secrets_dir=self.secrets.dir,
                broker_password=self.secrets.password(BROKER),
            )
        except (KeyError, ValueError) as exc:
            raise LocalKafkaError(f"broker config template {template} is invalid: {exc}") from exc
        # it holds the brokers' own password
        write_secret(self.properties_path(node_id), rendered.encode())

    def format(self, toolchain: Toolchain, node_id: int, cluster_id: str) -> None:
        """Format a node's storage once, with a SCRAM credential for every principal (Kafka's
        storage tool derives them; KRaft brokers can authenticate to each other only with
        credentials that exist before the first start)."""
        marker = self.node_dir(node_id) / "scram-principals"
        if (self.node_dir(node_id) / "data" / "meta.properties").is_file():
            if not marker.is_file():
                raise LocalKafkaError(
                    f"node {node_id}'s storage was formatted before the local Kafka was "
                    "secured: run `c2bus kafka reset` (it wipes local Kafka data)"
                )
            return
        names = principals(registered(self.secrets.dir))
        scram = [
            arg
            for name in names
            for arg in (
                "--add-scram",
                f"SCRAM-SHA-512=[name={name},password={self.secrets.password(name)}]",
            )
        ]
        cmd = [
            str(toolchain.java),
            "-Xmx256m",
            "-cp",
            toolchain.classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_path(node_id)),
            *scram,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            lines = [ln for ln in (out.stderr + out.stdout).splitlines() if ln.strip()]
            detail = lines[-1] if lines else f"exit status {out.returncode}"
            raise LocalKafkaError(f"formatting storage of node {node_id} failed: {detail}")
        marker.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
