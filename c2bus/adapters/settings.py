"""Settings read once from the environment (``C2BUS_…``) into frozen objects.

Units are in the names; ``None`` means "not set / disabled". Only adapters and services see
these objects, never the core.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
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


SECURITY_PROTOCOLS = ("SASL_SSL", "SSL", "PLAINTEXT")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
#: the Kafka principal each process authenticates as unless C2BUS_KAFKA_USER says otherwise
PRINCIPALS = {
    "ingest": "ingest",
    "enforcer": "enforcer",
    "gateway": "gateway",
    "policy_api": "policy-api",
    "simulator": "simulator",
    "reader": "reader",
    "admin": "admin",
}


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How a client proves to Kafka who it is, and how it checks that Kafka is Kafka.

    ``SASL_SSL`` (the default): TLS, then SCRAM with ``user`` and the password in
    ``password_file``. ``SSL``: TLS with a client certificate (``cert_file``, ``key_file``).
    ``PLAINTEXT``: neither, only by explicit choice. ``ca_file`` is the CA the brokers'
    certificates are checked against (None: the system's). The password is read from its file
    when a client is built, so it is in no settings object, log or repr.
    """

    protocol: str = "SASL_SSL"
    mechanism: str = "SCRAM-SHA-512"
    user: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], principal: str, secrets_dir: Path | None
    ) -> KafkaSecurity:
        protocol = (env.get("C2BUS_KAFKA_SECURITY_PROTOCOL") or "SASL_SSL").upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"C2BUS_KAFKA_SECURITY_PROTOCOL={protocol!r} is not supported: use "
                + ", ".join(SECURITY_PROTOCOLS)
            )
        mechanism = (env.get("C2BUS_KAFKA_SASL_MECHANISM") or "SCRAM-SHA-512").upper()
        if mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"C2BUS_KAFKA_SASL_MECHANISM={mechanism!r} is not supported: use "
                + ", ".join(SASL_MECHANISMS)
            )
        secrets = _path(env.get("C2BUS_KAFKA_SECRETS_DIR")) or secrets_dir
        user = env.get("C2BUS_KAFKA_USER") or principal
        password = _path(env.get("C2BUS_KAFKA_PASSWORD_FILE")) or (
            secrets / f"{user}.password" if secrets else None
        )
        ca = _path(env.get("C2BUS_KAFKA_CA_FILE")) or (secrets / "ca.crt" if secrets else None)
        return cls(
            protocol=protocol,
            mechanism=mechanism,
            user=user,
            password_file=password,
            ca_file=ca,
            cert_file=_path(env.get("C2BUS_KAFKA_CERT_FILE")),
            key_file=_path(env.get("C2BUS_KAFKA_KEY_FILE")),
        )

    def password(self) -> str:
        """The SCRAM password, read from its file now."""
        if self.password_file is None:
            raise ConfigError(
                f"Kafka user {self.user!r} has no password: set C2BUS_KAFKA_PASSWORD_FILE"
            )
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the Kafka password of {self.user!r} from {self.password_file} "
                f"({exc.strerror}): set C2BUS_KAFKA_PASSWORD_FILE, or run `c2bus kafka start` "
                "to create the local credentials"
            ) from None

    def as_user(self, user: str) -> KafkaSecurity:
        """The same settings for another principal of the same secrets directory."""
        folder = self.password_file.parent if self.password_file else None
        return replace(
            self, user=user, password_file=folder / f"{user}.password" if folder else None
        )


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where Kafka is, how topics are named and how clients authenticate.

    ``bootstrap``: ``C2BUS_KAFKA_BOOTSTRAP`` when it points at an existing cluster, else the
    local broker's address. ``external`` says which.
    """

    bootstrap: str
    external: bool
    topic_prefix: str
    request_timeout_ms: int = 30_000
    security: KafkaSecurity = KafkaSecurity()

    @property
    def request_timeout_s(self) -> float:
        return self.request_timeout_ms / 1000

    def environment(self) -> dict[str, str]:
        """The ``C2BUS_KAFKA_*`` variables that point another c2bus process at this cluster,
        authenticating as its own principal with its password from the same secrets
        directory (the topic prefix is the caller's to set)."""
        security = self.security
        env = {
            "C2BUS_KAFKA_BOOTSTRAP": self.bootstrap,
            "C2BUS_KAFKA_SECURITY_PROTOCOL": security.protocol,
            "C2BUS_KAFKA_SASL_MECHANISM": security.mechanism,
            "C2BUS_KAFKA_REQUEST_TIMEOUT_MS": str(self.request_timeout_ms),
        }
        if security.password_file is not None:
            env["C2BUS_KAFKA_SECRETS_DIR"] = str(security.password_file.parent)
        if security.ca_file is not None:
            env["C2BUS_KAFKA_CA_FILE"] = str(security.ca_file)
        return env

    @classmethod
    def at(cls, bootstrap: str, security: KafkaSecurity, topic_prefix: str = "c2") -> KafkaSettings:
        """Settings for a cluster at a known address (the local tooling, tests, benchmarks)."""
        return cls(bootstrap, True, topic_prefix, security=security)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, principal: str = "admin"
    ) -> KafkaSettings:
        """Read the settings; ``principal`` is who this process is unless C2BUS_KAFKA_USER
        says otherwise (its password in ``<secrets>/<principal>.password``)."""
        env = os.environ if env is None else env
        prefix = env.get("C2BUS_TOPIC_PREFIX") or "c2"
        if not _PREFIX_RE.match(prefix):
            raise ConfigError(
                f"C2BUS_TOPIC_PREFIX={prefix!r} is invalid: use 1-64 letters, digits, _ or -"
            )
        timeout_ms = _int(env, "C2BUS_KAFKA_REQUEST_TIMEOUT_MS", 30_000, 1_000, 600_000)
        external = (env.get("C2BUS_KAFKA_BOOTSTRAP") or "").strip()
        if external:
            security = KafkaSecurity.from_env(env, principal, None)
            return cls(external, True, prefix, timeout_ms, security)
        local = LocalKafkaSettings.from_env(env)
        security = KafkaSecurity.from_env(env, principal, local.secrets_dir)
        return cls(local.bootstrap(nodes=1), False, prefix, timeout_ms, security)


@dataclass(frozen=True, slots=True)
class LocalKafkaSettings:
    """The project's own broker(s): ports, heap, and where jars and data live.

    Node ``i`` (0-based) listens for clients on ``base_port + 2*i`` (SASL_SSL), for the
    controller quorum on ``base_port + 2*i + 1``, and for clients with certificates on
    ``base_port + 10 + i``: 9092/9093/9102 for one node; 9092, 9094, 9096 (9102-9104) for
    three.
    """

    home: Path
    deploy_dir: Path
    jars_dir: Path
    base_port: int
    heap_mb: int | None
    start_timeout_s: int
    host: str = "localhost"
    #: an open PLAINTEXT listener (base port, one per node) whose anonymous clients are super
    #: users: only to measure what security costs (``make bench``), never for real use
    plaintext_port: int | None = None

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
            plaintext_port=(
                _int(env, "C2BUS_KAFKA_PLAINTEXT_PORT", 0, 1024, 65000)
                if env.get("C2BUS_KAFKA_PLAINTEXT_PORT")
                else None
            ),
        )

    @property
    def secrets_dir(self) -> Path:
        """Where the local cluster's CA, broker certificate and passwords are."""
        return self.home / "secrets"

    def broker_port(self, index: int) -> int:
        return self.base_port + 2 * index

    def mtls_port(self, index: int) -> int:
        """Where node ``index`` takes clients that authenticate with a certificate."""
        return self.base_port + 10 + index

    def mtls_bootstrap(self, nodes: int) -> str:
        return ",".join(f"{self.host}:{self.mtls_port(i)}" for i in range(nodes))

    def controller_port(self, index: int) -> int:
        return self.base_port + 2 * index + 1

    def bootstrap(self, nodes: int) -> str:
        return ",".join(f"{self.host}:{self.broker_port(i)}" for i in range(nodes))


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Token verification, and where local tokens are minted.

    By default (``local``) tokens are EdDSA, signed by keys of a local deployment kept in
    ``dir`` (``C2BUS_JWT_DIR``, default ``.c2bus/secrets/tokens``: ``<name>.key`` private,
    ``jwks.json`` public), and verifiers read the public ``jwks.json`` only. An identity
    provider's keys: ``C2BUS_JWT_JWKS_FILE``. A shared HS256 key, which lets every holder
    mint any identity, only by explicit opt-in (``C2BUS_JWT_HS256_KEY_FILE``) and never
    beside a JWKS. ``max_ttl_s``: the longest lifetime a token may have (``exp - iat``)."""

    dir: Path
    audience: str
    issuer: str
    jwks_file: Path | None = None
    hs256_key_file: Path | None = None
    revocation_file: Path | None = None
    max_ttl_s: int = 24 * 3600

    @property
    def local(self) -> bool:
        return self.jwks_file is None and self.hs256_key_file is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthSettings:
        env = os.environ if env is None else env
        home = Path(env.get("C2BUS_HOME") or project_root() / ".c2bus").expanduser()
        if env.get("C2BUS_JWT_KEY_FILE"):
            raise ConfigError(
                "C2BUS_JWT_KEY_FILE is no longer read: local tokens are EdDSA "
                "(C2BUS_JWT_DIR); a shared HS256 key needs the explicit "
                "C2BUS_JWT_HS256_KEY_FILE"
            )
        jwks = _path(env.get("C2BUS_JWT_JWKS_FILE"))
        hs256 = _path(env.get("C2BUS_JWT_HS256_KEY_FILE"))
        if jwks is not None and hs256 is not None:
            raise ConfigError(
                "C2BUS_JWT_HS256_KEY_FILE and C2BUS_JWT_JWKS_FILE are both set: HS256 is "
                "accepted never beside a JWKS (its key holders could mint any identity)"
            )
        directory = _path(env.get("C2BUS_JWT_DIR")) or home / "secrets" / "tokens"
        return cls(
            dir=directory.resolve(),
            audience=env.get("C2BUS_JWT_AUDIENCE") or "c2bus",
            issuer=env.get("C2BUS_JWT_ISSUER") or "c2bus-local",
            jwks_file=jwks,
            hs256_key_file=hs256,
            revocation_file=_path(env.get("C2BUS_JWT_REVOCATION_FILE")),
            max_ttl_s=_int(env, "C2BUS_JWT_MAX_TTL_S", 24 * 3600, 60, 30 * 24 * 3600),
        )


@dataclass(frozen=True, slots=True)
class SigningSettings:
    """Record signatures: the directory of a local deployment's keys and trust store
    (``C2BUS_SIGNING_DIR``, default ``.c2bus/secrets/signing``), or an operator's own key
    and trust store files (``C2BUS_SIGNING_KEY_FILE``, ``C2BUS_TRUST_FILE``).

    ``local``: no key or trust file was given, so keys are made in ``dir`` on first use."""

    dir: Path
    key_file: Path | None
    trust_file: Path
    local: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SigningSettings:
        env = os.environ if env is None else env
        home = Path(env.get("C2BUS_HOME") or project_root() / ".c2bus").expanduser()
        directory = _path(env.get("C2BUS_SIGNING_DIR")) or home / "secrets" / "signing"
        key_file = _path(env.get("C2BUS_SIGNING_KEY_FILE"))
        trust_file = _path(env.get("C2BUS_TRUST_FILE"))
        return cls(
            dir=directory.resolve(),
            key_file=key_file,
            trust_file=trust_file or directory.resolve() / "trust.json",
            local=key_file is None and trust_file is None,
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
    ``checkpoint_interval_s``: how often, at most, a lane signs a checkpoint of its decisions
    partition's audit chain while the chain moves on; decisions removed from a partition's
    end after its last checkpoint go unnoticed, so this bounds what could.
    """

    exactly_once: bool
    commit_interval_ms: int
    commit_timeout_s: int
    watchdog_s: int
    session_timeout_ms: int
    checkpoint_interval_s: int = 30

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
            checkpoint_interval_s=_int(env, "C2BUS_ENFORCER_CHECKPOINT_INTERVAL_S", 30, 1, 3600),
        )


GATEWAY_OPS_PORT = 8766


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """How the gateway serves consoles.

    ``buffer_bytes``: event frames waiting for one console; past half of it SA is
    conflated to the latest state per entity, past all of it the console is closed as slow.
    ``sa_horizon_s``: how far back the latest-SA snapshot reaches (read at start-up too).
    ``submit_rate``: directives and acknowledgements per second per console (burst: twice).
    ``replays``: resumes read from Kafka at the same time (the others wait their turn).
    ``ops_port``: the operators' listener (``/metrics``, ``/healthz``, ``/readyz``), apart
    from the console port (0 picks a free one).
    ``heartbeat_s``: a ping to each console this often; one not answered within as long
    again closes the console as slow (4008).
    """

    buffer_bytes: int
    sa_horizon_s: int
    submit_rate: float
    replays: int
    ops_port: int
    heartbeat_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        return cls(
            buffer_bytes=_int(env, "C2BUS_GATEWAY_BUFFER_BYTES", 1 << 20, 16 << 10, 1 << 30),
            sa_horizon_s=_int(env, "C2BUS_GATEWAY_SA_HORIZON_S", 3600, 1, 30 * 86400),
            submit_rate=float(_int(env, "C2BUS_GATEWAY_SUBMIT_RATE", 5, 1, 10_000)),
            replays=_int(env, "C2BUS_GATEWAY_REPLAYS", 4, 1, 64),
            ops_port=_int(env, "C2BUS_GATEWAY_OPS_PORT", GATEWAY_OPS_PORT, 0, 65535),
            heartbeat_s=float(_int(env, "C2BUS_GATEWAY_HEARTBEAT_S", 20, 1, 300)),
        )


DEFAULT_PORTS = {"ingest": 8081, "enforcer": 8082, "policy_api": 8083, "gateway": 8765}


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """What every service reads: Kafka, tokens, where it listens, how it stops."""

    service: str
    instance: str
    kafka: KafkaSettings
    auth: AuthSettings
    signing: SigningSettings
    host: str
    port: int
    shutdown_timeout_s: float
    #: how long an HTTP client may take to send a request's head (C2BUS_HTTP_HEAD_TIMEOUT_S)
    http_head_timeout_s: float
    #: the policy API's limit on the work one request's document makes (parsing,
    #: validating, compiling, a dry or shadow run), C2BUS_POLICY_API_TIME_LIMIT_S
    policy_api_time_limit_s: float
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
            kafka=KafkaSettings.from_env(env, PRINCIPALS.get(service, service)),
            auth=AuthSettings.from_env(env),
            signing=SigningSettings.from_env(env),
            host=env.get("C2BUS_HOST") or "127.0.0.1",
            port=_int(env, f"C2BUS_{upper}_PORT", DEFAULT_PORTS.get(service, 0), 0, 65535),
            shutdown_timeout_s=_int(env, "C2BUS_SHUTDOWN_TIMEOUT_S", 10, 1, 300),
            http_head_timeout_s=_int(env, "C2BUS_HTTP_HEAD_TIMEOUT_S", 10, 1, 300),
            policy_api_time_limit_s=_int(env, "C2BUS_POLICY_API_TIME_LIMIT_S", 10, 1, 600),
            log_level=env.get("C2BUS_LOG_LEVEL") or "INFO",
            policy_file=Path(policy).expanduser().resolve(),
            policy_set_id=env.get("C2BUS_POLICY_SET") or "alliance-main",
            # Each service validates only its own variables: a bad gateway setting must not
            # stop the ingest (the others get the defaults, which they never use).
            gateway=GatewaySettings.from_env(env if service == "gateway" else {}),
            enforcer=EnforcerSettings.from_env(env if service == "enforcer" else {}),
        )
