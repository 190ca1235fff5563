"""Settings read once from the environment (``C2BUS_…``) into frozen objects.

Units are in the names; ``None`` means "not set / disabled". Only adapters and services see
these objects, never the core.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from c2bus.errors import ConfigError

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_DEFAULT_BROKER_PORT = 9092


def project_root() -> Path:
    """The checkout this package runs from (it holds ``deploy/``)."""
    return Path(__file__).resolve().parents[2]


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range: expected {lo}..{hi}")
    return value


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where Kafka is and how topics are named.

    ``bootstrap``: ``C2BUS_KAFKA_BOOTSTRAP`` when it points at an existing cluster, else the
    local broker's address. ``external`` says which.
    """

    bootstrap: str
    external: bool
    topic_prefix: str
    request_timeout_ms: int = 30_000

    @property
    def request_timeout_s(self) -> float:
        return self.request_timeout_ms / 1000

    @classmethod
    def at(cls, bootstrap: str, topic_prefix: str = "c2") -> KafkaSettings:
        """Settings for a cluster at a known address (the local tooling, tests, benchmarks)."""
        return cls(bootstrap, True, topic_prefix)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        env = os.environ if env is None else env
        prefix = env.get("C2BUS_TOPIC_PREFIX") or "c2"
        if not _PREFIX_RE.match(prefix):
            raise ConfigError(
                f"C2BUS_TOPIC_PREFIX={prefix!r} is invalid: use 1-64 letters, digits, _ or -"
            )
        timeout_ms = _int(env, "C2BUS_KAFKA_REQUEST_TIMEOUT_MS", 30_000, 1_000, 600_000)
        external = (env.get("C2BUS_KAFKA_BOOTSTRAP") or "").strip()
        if external:
            return cls(external, True, prefix, timeout_ms)
        local = LocalKafkaSettings.from_env(env)
        return cls(local.bootstrap(nodes=1), False, prefix, timeout_ms)


@dataclass(frozen=True, slots=True)
class LocalKafkaSettings:
    """The project's own broker(s): ports, heap, and where jars and data live.

    Node ``i`` (0-based) listens for clients on ``base_port + 2*i`` and for the controller
    quorum on ``base_port + 2*i + 1``: 9092/9093 for one node; 9092, 9094, 9096 for three.
    """

    home: Path
    deploy_dir: Path
    jars_dir: Path
    base_port: int
    heap_mb: int | None
    start_timeout_s: int
    host: str = "localhost"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LocalKafkaSettings:
        env = os.environ if env is None else env
        root = project_root()
        home = Path(env.get("C2BUS_HOME") or root / ".c2bus").expanduser()
        deploy = Path(env.get("C2BUS_DEPLOY_DIR") or root / "deploy").expanduser()
        jars = Path(env.get("C2BUS_KAFKA_JARS_DIR") or root / ".c2bus" / "jars").expanduser()
        heap = env.get("C2BUS_KAFKA_HEAP_MB")
        return cls(
            home=home.resolve(),
            deploy_dir=deploy.resolve(),
            jars_dir=jars.resolve(),
            base_port=_int(env, "C2BUS_KAFKA_PORT", _DEFAULT_BROKER_PORT, 1024, 65000),
            heap_mb=_int(env, "C2BUS_KAFKA_HEAP_MB", 0, 128, 8192) if heap else None,
            start_timeout_s=_int(env, "C2BUS_KAFKA_START_TIMEOUT_S", 120, 5, 1800),
        )

    def broker_port(self, index: int) -> int:
        return self.base_port + 2 * index

    def controller_port(self, index: int) -> int:
        return self.base_port + 2 * index + 1

    def bootstrap(self, nodes: int) -> str:
        return ",".join(f"{self.host}:{self.broker_port(i)}" for i in range(nodes))


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Token verification: the HS256 key file, an optional JWKS file of EdDSA and RS256
    public keys, and the audience and issuer tokens must name."""

    key_file: Path
    audience: str
    issuer: str
    jwks_file: Path | None = None
    revocation_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthSettings:
        env = os.environ if env is None else env
        home = Path(env.get("C2BUS_HOME") or project_root() / ".c2bus").expanduser()
        key_file = Path(env.get("C2BUS_JWT_KEY_FILE") or home / "secrets" / "jwt-hs256.key")
        return cls(
            key_file=key_file.expanduser().resolve(),
            audience=env.get("C2BUS_JWT_AUDIENCE") or "c2bus",
            issuer=env.get("C2BUS_JWT_ISSUER") or "c2bus-local",
            jwks_file=_path(env.get("C2BUS_JWT_JWKS_FILE")),
            revocation_file=_path(env.get("C2BUS_JWT_REVOCATION_FILE")),
        )


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    """Where ``c2bus up`` starts Prometheus, and how often it scrapes and evaluates rules
    (None: as ``deploy/prometheus/prometheus.yml`` says)."""

    port: int
    scrape_interval_s: float | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PrometheusSettings:
        env = os.environ if env is None else env
        port = _int(env, "C2BUS_PROMETHEUS_PORT", 9090, 1, 65535)
        raw = env.get("C2BUS_PROMETHEUS_SCRAPE_S") or ""
        if not raw:
            return cls(port, None)
        try:
            interval = float(raw)
        except ValueError:
            raise ConfigError(f"C2BUS_PROMETHEUS_SCRAPE_S={raw!r} is not a number") from None
        if not 0.1 <= interval <= 300:
            raise ConfigError(
                f"C2BUS_PROMETHEUS_SCRAPE_S={interval:g} is out of range: expected 0.1..300"
            )
        return cls(port, interval)


def _path(raw: str | None) -> Path | None:
    return Path(raw).expanduser().resolve() if raw else None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")


@dataclass(frozen=True, slots=True)
class EnforcerSettings:
    """How the enforcer commits.

    ``exactly_once``: one Kafka transaction per input partition and commit interval (the
    default); ``false`` gives at-least-once (plain offset commits), for comparison only.
    ``watchdog_s``: a pipeline that makes no progress for this long is restarted.
    ``session_timeout_ms``: how long the group waits for a silent enforcer before giving
    its partitions to the others (the broker's minimum is 6 s).
    """

    exactly_once: bool
    commit_interval_ms: int
    commit_timeout_s: int
    watchdog_s: int
    session_timeout_ms: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EnforcerSettings:
        env = os.environ if env is None else env
        return cls(
            exactly_once=_bool(env, "C2BUS_ENFORCER_EXACTLY_ONCE", True),
            commit_interval_ms=_int(env, "C2BUS_ENFORCER_COMMIT_INTERVAL_MS", 100, 1, 60_000),
            commit_timeout_s=_int(env, "C2BUS_ENFORCER_COMMIT_TIMEOUT_S", 15, 1, 600),
            watchdog_s=_int(env, "C2BUS_ENFORCER_WATCHDOG_S", 60, 5, 3600),
            session_timeout_ms=_int(
                env, "C2BUS_ENFORCER_SESSION_TIMEOUT_MS", 10_000, 6_000, 300_000
            ),
        )


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """How the gateway serves consoles.

    ``buffer_bytes``: event frames waiting for one console; past half of it SA is
    conflated to the latest state per entity, past all of it the console is closed as slow.
    ``sa_horizon_s``: how far back the latest-SA snapshot reaches (read at start-up too).
    ``submit_rate``: directives and acknowledgements per second per console (burst: twice).
    ``replays``: resumes read from Kafka at the same time (the others wait their turn).
    """

    buffer_bytes: int
    sa_horizon_s: int
    submit_rate: float
    replays: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        return cls(
            buffer_bytes=_int(env, "C2BUS_GATEWAY_BUFFER_BYTES", 1 << 20, 16 << 10, 1 << 30),
            sa_horizon_s=_int(env, "C2BUS_GATEWAY_SA_HORIZON_S", 3600, 1, 30 * 86400),
            submit_rate=float(_int(env, "C2BUS_GATEWAY_SUBMIT_RATE", 5, 1, 10_000)),
            replays=_int(env, "C2BUS_GATEWAY_REPLAYS", 4, 1, 64),
        )


DEFAULT_PORTS = {"ingest": 8081, "enforcer": 8082, "policy_api": 8083, "gateway": 8765}


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """What every service reads: Kafka, tokens, where it listens, how it stops."""

    service: str
    instance: str
    kafka: KafkaSettings
    auth: AuthSettings
    host: str
    port: int
    shutdown_timeout_s: float
    log_level: str
    policy_file: Path
    policy_set_id: str
    gateway: GatewaySettings
    enforcer: EnforcerSettings

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if env is None else env
        upper = service.upper()
        policy = env.get("C2BUS_POLICY_FILE") or (
            project_root() / "deploy" / "policies" / "alliance.yaml"
        )
        return cls(
            service=service,
            instance=env.get("C2BUS_INSTANCE") or f"{service}-{os.getpid()}",
            kafka=KafkaSettings.from_env(env),
            auth=AuthSettings.from_env(env),
            host=env.get("C2BUS_HOST") or "127.0.0.1",
            port=_int(env, f"C2BUS_{upper}_PORT", DEFAULT_PORTS.get(service, 0), 0, 65535),
            shutdown_timeout_s=_int(env, "C2BUS_SHUTDOWN_TIMEOUT_S", 10, 1, 300),
            log_level=env.get("C2BUS_LOG_LEVEL") or "INFO",
            policy_file=Path(policy).expanduser().resolve(),
            policy_set_id=env.get("C2BUS_POLICY_SET") or "alliance-main",
            # Each service validates only its own variables: a bad gateway setting must not
            # stop the ingest (the others get the defaults, which they never use).
            gateway=GatewaySettings.from_env(env if service == "gateway" else {}),
            enforcer=EnforcerSettings.from_env(env if service == "enforcer" else {}),
        )
