"""The ``c2bus`` command.

Human-facing: progress lines on stderr, results on stdout, and every failure one line
``c2bus: error: <cause>: <fix>`` with a non-zero exit status (1 for failures, 2 for usage).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from c2bus import __version__
from c2bus.adapters.acls import ACL_FILE, Roles, describe, grant
from c2bus.adapters.kafka import librdkafka_config, probe
from c2bus.adapters.settings import (
    AuthSettings,
    KafkaSettings,
    LocalKafkaSettings,
    ServiceSettings,
    SigningSettings,
    project_root,
)
from c2bus.adapters.signing import LocalKeys, read_trust
from c2bus.adapters.topics import TOPICS, create_topics
from c2bus.core.schemas import generate, render
from c2bus.errors import C2BusError, KafkaUnavailable
from c2bus.tools import cli_policy
from c2bus.tools.localkafka import LocalCluster, kafka_version
from c2bus.tools.localkafka.onboarding import Onboarding, registered
from c2bus.tools.localkafka.toolchain import Toolchain, fetch_jars, find_java
from c2bus.tools.progress import progress as _progress
from c2bus.tools.simulator import command as sim_command

EXIT_FAILURE = 1
EXIT_NOT_RUNNING = 3


def _external_hint(settings: KafkaSettings) -> str:
    if settings.external:
        return "check C2BUS_KAFKA_BOOTSTRAP, or unset it to use the local broker"
    return "start the local broker with `c2bus kafka start`, or set C2BUS_KAFKA_BOOTSTRAP"


# --- kafka ---------------------------------------------------------------------------------


def cmd_kafka_fetch(args: argparse.Namespace) -> int:
    local = LocalKafkaSettings.from_env()
    java = find_java()
    libs = fetch_jars(local.deploy_dir, local.jars_dir, _progress)
    print(f"Java: {java}")
    print(f"Kafka {kafka_version(local.deploy_dir)} jars: {libs}")
    return 0


def cmd_kafka_start(args: argparse.Namespace) -> int:
    settings = KafkaSettings.from_env()
    if settings.external:
        try:
            info = asyncio.run(probe(settings, args.timeout or 15))
        except KafkaUnavailable as exc:
            raise KafkaUnavailable(
                f"{exc} (C2BUS_KAFKA_BOOTSTRAP): {_external_hint(settings)}"
            ) from exc
        _progress(
            f"C2BUS_KAFKA_BOOTSTRAP is set: using the existing cluster at {settings.bootstrap} "
            f"({len(info.broker_ids)} brokers); no local broker started"
        )
        return 0
    cluster = LocalCluster(LocalKafkaSettings.from_env(), args.nodes)
    cluster.start(_progress, args.timeout)
    print(cluster.bootstrap)
    return 0


def cmd_kafka_status(args: argparse.Namespace) -> int:
    settings = KafkaSettings.from_env()
    if settings.external:
        try:
            info = asyncio.run(probe(settings, 10))
        except KafkaUnavailable as exc:
            print(f"external cluster {settings.bootstrap}: unreachable ({exc})")
            return EXIT_NOT_RUNNING
        print(
            f"external cluster {settings.bootstrap}: {len(info.broker_ids)} brokers, "
            f"{len(info.topics)} topics"
        )
        return 0
    local = LocalKafkaSettings.from_env()
    any_running = False
    for nodes in (1, 3):
        status = LocalCluster(local, nodes).status()
        if not status.running:
            continue
        any_running = True
        health = "healthy" if status.healthy else "DEGRADED"
        print(f"local {nodes}-node Kafka at {status.bootstrap}: {health}")
        for node in status.nodes:
            state = f"running (pid {node.pid})" if node.running else "NOT RUNNING"
            print(f"  node {node.node_id}  localhost:{node.broker_port}  {state}")
        if status.info:
            print(
                f"  metadata: brokers {list(status.info.broker_ids)}, controller "
                f"{status.info.controller_id}, {len(status.info.topics)} topics"
            )
        else:
            print("  metadata: no answer")
        if not status.healthy:
            return EXIT_FAILURE
    if not any_running:
        print("no local Kafka is running (start one with `c2bus kafka start`)")
        return EXIT_NOT_RUNNING
    return 0


def cmd_kafka_stop(args: argparse.Namespace) -> int:
    local = LocalKafkaSettings.from_env()
    stopped = sum(LocalCluster(local, n).stop(_progress, args.grace) for n in (1, 3))
    if not stopped:
        _progress("no local Kafka was running")
    return 0


def cmd_kafka_client_config(args: argparse.Namespace) -> int:
    """A librdkafka configuration (kcat, confluent-kafka) for one principal."""
    settings = KafkaSettings.from_env(principal=args.principal)
    if not settings.external:
        cluster = LocalCluster(LocalKafkaSettings.from_env(), args.nodes)
        cluster.secrets.ensure([])  # the CA, if no broker has started yet
        settings = (
            cluster.mtls_client(args.principal) if args.mtls else cluster.client(args.principal)
        )
    elif args.mtls:
        raise C2BusError(
            "--mtls prints the local cluster's certificates: for an external cluster set "
            "C2BUS_KAFKA_SECURITY_PROTOCOL=SSL, C2BUS_KAFKA_CERT_FILE and C2BUS_KAFKA_KEY_FILE"
        )
    for key, value in librdkafka_config(settings).items():
        print(f"{key}={value}")
    return 0


def cmd_kafka_acls_show(args: argparse.Namespace) -> int:
    """The ACL file's bindings for the topic prefix, each marked by whether the cluster has
    it, then any binding the cluster has that the file does not."""
    settings = KafkaSettings.from_env()
    prefix = settings.topic_prefix
    wanted = Roles.load().bindings(prefix, _added(settings))
    if args.file_only:
        for binding in wanted:
            print(binding)
        return 0
    present = set(asyncio.run(describe(settings, prefix)))
    for binding in wanted:
        print(f"{'ok     ' if binding in present else 'MISSING'} {binding}")
    for binding in sorted(present - set(wanted)):
        print(f"EXTRA   {binding}")
    missing = [b for b in wanted if b not in present]
    return EXIT_FAILURE if missing else 0


def cmd_kafka_acls_apply(args: argparse.Namespace) -> int:
    settings = KafkaSettings.from_env()
    bindings = asyncio.run(grant(settings, settings.topic_prefix, _added(settings)))
    _progress(f"granted {len(bindings)} ACLs for {settings.topic_prefix}. ({ACL_FILE.name})")
    return 0


def _secrets_dir(settings: KafkaSettings) -> Path:
    folder = settings.security.password_file
    if folder is None:
        raise C2BusError(
            "no secrets directory for the new credential: set C2BUS_KAFKA_SECRETS_DIR "
            "(the local cluster's is C2BUS_HOME/secrets)"
        )
    return folder.parent


def _added(settings: KafkaSettings) -> list[tuple[str, str]]:
    """The principals added with `c2bus kafka principal add`, with their roles."""
    folder = settings.security.password_file
    return list(registered(folder.parent).items()) if folder is not None else []


def _onboarding() -> tuple[KafkaSettings, Onboarding]:
    """The admin's settings, and the onboarding of principals on that cluster."""
    settings = KafkaSettings.from_env()
    local = LocalKafkaSettings.from_env()
    toolchain = Toolchain.prepare(local.deploy_dir, local.jars_dir, _progress)
    return settings, Onboarding(settings, _secrets_dir(settings), toolchain)


def cmd_kafka_principal_add(args: argparse.Namespace) -> int:
    settings, onboarding = _onboarding()
    onboarding.check_new(args.name, args.role)
    granted = asyncio.run(onboarding.add(args.name, args.role, settings.topic_prefix))
    _progress(
        f"added {args.name} (role {args.role}): a SCRAM credential and {granted} ACLs for "
        f"{settings.topic_prefix}.; its client configuration:"
    )
    client = replace(settings, security=settings.security.as_user(args.name))
    for key, value in librdkafka_config(client).items():
        print(f"{key}={value}")
    return 0


def cmd_kafka_principal_remove(args: argparse.Namespace) -> int:
    _, onboarding = _onboarding()
    revoked = asyncio.run(onboarding.remove(args.name))
    _progress(f"removed {args.name}: its credential and {revoked} ACLs")
    return 0


def cmd_kafka_reset(args: argparse.Namespace) -> int:
    if not args.yes:
        raise C2BusError(
            "reset deletes every topic and message of the local Kafka: add --yes to confirm"
        )
    local = LocalKafkaSettings.from_env()
    for n in (1, 3):
        LocalCluster(local, n).reset(_progress)
    return 0


# --- topics --------------------------------------------------------------------------------


def cmd_topics_create(args: argparse.Namespace) -> int:
    settings = KafkaSettings.from_env()

    async def create() -> None:
        await create_topics(
            settings, settings.topic_prefix, replication=args.replication_factor, progress=_progress
        )
        bindings = await grant(settings, settings.topic_prefix, _added(settings))
        _progress(f"granted {len(bindings)} ACLs for {settings.topic_prefix}. ({ACL_FILE.name})")

    try:
        asyncio.run(create())
    except KafkaUnavailable as exc:
        raise KafkaUnavailable(f"{exc}: {_external_hint(settings)}") from exc
    return 0


def cmd_topics_list(args: argparse.Namespace) -> int:
    settings = KafkaSettings.from_env()
    for spec in TOPICS:
        config = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        print(f"{spec.name(settings.topic_prefix):32} {spec.partitions:3} partitions  {config}")
        print(f"{'':32} {spec.description}")
    return 0


# --- schemas -------------------------------------------------------------------------------


def cmd_schemas_export(args: argparse.Namespace) -> int:
    target = Path(args.dir)
    stale: list[str] = []
    for name, doc in generate().items():
        path = target / name
        text = render(doc)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            target.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            _progress(f"wrote {path}")
    if args.check and stale:
        raise C2BusError(
            f"schemas out of date with the code: {', '.join(stale)}: run `c2bus schemas export`"
        )
    if not stale:
        _progress(f"schemas in {target} are up to date")
    return 0


# --- the system ------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from c2bus.tools.up import UpOptions, run_up

    options = UpOptions(
        tracks=args.tracks,
        rate_hz=args.rate,
        directive_every_s=args.directive_every,
        simulator=not args.no_sim,
        prometheus=not args.no_prometheus,
    )
    return run_up(options, _progress)


def cmd_serve(args: argparse.Namespace) -> int:
    from c2bus.adapters.lifecycle import run_service

    if args.service == "enforcer":
        from c2bus.services.enforcer.app import main as service_main
    elif args.service == "ingest":
        from c2bus.services.ingest.app import main as service_main
    elif args.service == "policy_api":
        from c2bus.services.policy_api.app import main as service_main
    else:
        from c2bus.services.gateway.app import main as service_main
    return run_service(args.service, service_main)


def cmd_sim(args: argparse.Namespace) -> int:
    return sim_command.run(args)


def _identity_token(args: argparse.Namespace, ttl_s: int) -> str:
    from c2bus.adapters.auth import LOCAL_ISSUER, local_minter
    from c2bus.core.identity import Identity
    from c2bus.core.labels import Classification

    auth = AuthSettings.from_env()
    try:
        clearance = Classification(args.clearance)
    except ValueError:
        levels = ", ".join(c.value for c in Classification)
        raise C2BusError(f"unknown clearance {args.clearance!r}: use one of {levels}") from None
    identity = Identity(
        subject=args.sub or f"console-{args.unit.lower()}",
        nation=args.nation,
        clearance=clearance,
        unit=args.unit,
        roles=frozenset(r for r in args.roles.split(",") if r),
        acts_for=frozenset(u for u in (args.acts_for or "").split(",") if u),
    )
    return local_minter(auth, LOCAL_ISSUER)(identity, ttl_s)


def cmd_keys_init(args: argparse.Namespace) -> int:
    """Make the local signing keys that are missing and trust them."""
    settings = SigningSettings.from_env()
    if not settings.local:
        raise C2BusError(
            "C2BUS_SIGNING_KEY_FILE or C2BUS_TRUST_FILE is set: keys and trust store are the "
            "operator's to provide, not made here"
        )
    keys = LocalKeys(settings.dir)
    made = keys.ensure()
    for name in made:
        _progress(f"made the signing key of {name}: {keys.key_file(name)} (mode 0600)")
    _progress(f"trust store: {keys.trust_file}")
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    """Print the trust store: who may sign what."""
    settings = SigningSettings.from_env()
    for key in read_trust(settings.trust_file):
        print(f"{key.kid}  {key.name or '-':<10}  {', '.join(sorted(key.families))}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    print(_identity_token(args, args.ttl))
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from c2bus.tools.console.client import run_console

    token = args.token or _identity_token(args, 8 * 3600)
    if args.url:
        url = args.url
    else:
        gateway = ServiceSettings.from_env("gateway")
        url = f"ws://{gateway.host}:{gateway.port}"
    streams = [s for s in args.streams.split(",") if s]
    received = asyncio.run(
        run_console(
            url, token, streams, plain=args.plain, count=args.count, duration_s=args.duration
        )
    )
    if args.plain:
        _progress(f"{received} events received")
    return 0


def _add_identity_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sub", default=None, help="subject (default: console-<unit>)")
    p.add_argument("--unit", default="JFC-BRUNSSUM", help="unit id (default JFC-BRUNSSUM)")
    p.add_argument("--nation", default="DEU", help="ISO 3166-1 alpha-3 nation (default DEU)")
    p.add_argument(
        "--clearance", default="NATO SECRET", help="classification cleared to (NATO SECRET)"
    )
    p.add_argument(
        "--roles",
        default="console",
        help="comma-separated roles (console; commander to submit directives through the gateway; "
        "sa-publisher, directive-publisher for ingest)",
    )
    p.add_argument(
        "--acts-for",
        default="",
        metavar="UNITS",
        help="comma-separated units besides --unit whose directives and SA the token may post "
        "to the ingest (default none)",
    )


# --- trace ---------------------------------------------------------------------------------


def _duration(text: str) -> float:
    from c2bus.tools.trace import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def cmd_trace(args: argparse.Namespace) -> int:
    import json

    from c2bus.tools.trace import as_json, render_text, trace_directive

    settings = KafkaSettings.from_env(principal="reader")
    try:
        timeline, searched = asyncio.run(
            trace_directive(
                settings,
                args.directive_id,
                since_s=args.since,
                timeout_s=args.timeout,
            )
        )
    except KafkaUnavailable as exc:
        raise KafkaUnavailable(f"{exc}: {_external_hint(settings)}") from exc
    if args.json:
        print(json.dumps(as_json(timeline, searched), indent=2))
    else:
        print(render_text(timeline, searched))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Check the decisions topic's audit chain and signatures; exit 1 on any bad record."""
    import json
    from datetime import UTC, datetime, timedelta

    from c2bus.adapters.signing import trust_for
    from c2bus.adapters.topics import TopicNames
    from c2bus.tools.audit import render, verify_decisions

    settings = KafkaSettings.from_env(principal="reader")
    trust = trust_for(SigningSettings.from_env())
    topics = TopicNames(settings.topic_prefix)
    topic = topics.decisions
    since = None if args.since is None else datetime.now(UTC) - timedelta(seconds=args.since)
    _progress(f"reading {topic} {'from the beginning' if since is None else 'since ' + str(since)}")
    try:
        report = asyncio.run(
            verify_decisions(
                settings,
                topic,
                trust,
                checkpoints_topic=topics.checkpoints,
                since=since,
                progress=_progress,
                timeout_s=args.timeout,
            )
        )
    except KafkaUnavailable as exc:
        raise KafkaUnavailable(f"{exc}: {_external_hint(settings)}") from exc
    if args.json:
        doc = {
            "topic": report.topic,
            "records": report.records,
            "partitions": report.partitions,
            "bad": [
                {
                    "topic": f.topic or report.topic,
                    "partition": f.partition,
                    "offset": f.offset,
                    "problem": f.problem,
                }
                for f in report.findings
            ],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(render(report))
    if not report.ok:
        first = report.findings[0]
        _progress(
            f"{len(report.findings)} bad record(s); the first: {first.topic or topic} "
            f"partition {first.partition} offset {first.offset}"
        )
        return EXIT_FAILURE
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the harness as ``python -m loadtests`` in the checkout it belongs to: the
    benchmarks live beside the package, not in it."""
    root = project_root()
    if not (root / "loadtests" / "harness.py").is_file():
        raise C2BusError(
            f"the benchmarks are not in this installation (no loadtests/ in {root}): run "
            "c2bus bench from a checkout of c2bus (make bench)"
        )
    return subprocess.call([sys.executable, "-m", "loadtests", *args.bench_args], cwd=root)


# --- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c2bus",
        description="c2bus: command-and-control event streaming on Apache Kafka.",
        epilog="Environment: C2BUS_KAFKA_BOOTSTRAP points every command at an existing "
        "cluster; C2BUS_TOPIC_PREFIX (default c2) names the topics. See docs/.",
    )
    parser.add_argument("--version", action="version", version=f"c2bus {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = commands.add_parser("kafka", help="the local Apache Kafka (KRaft) broker")
    kafka_cmds = kafka.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = kafka_cmds.add_parser("fetch", help="fetch the Kafka jars from Maven Central (once)")
    p.set_defaults(func=cmd_kafka_fetch)
    p = kafka_cmds.add_parser(
        "start", help="start the local broker(s) in the background and wait until ready"
    )
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="1 (default) or 3")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="seconds to wait")
    p.set_defaults(func=cmd_kafka_start)
    p = kafka_cmds.add_parser("status", help="show the local broker(s); exit 3 if none runs")
    p.set_defaults(func=cmd_kafka_status)
    p = kafka_cmds.add_parser("stop", help="stop every local broker process")
    p.add_argument(
        "--grace", type=float, default=30.0, metavar="S", help="seconds before SIGKILL (30)"
    )
    p.set_defaults(func=cmd_kafka_stop)
    p = kafka_cmds.add_parser("reset", help="stop the local broker(s) and delete their data")
    p.add_argument("--yes", action="store_true", help="confirm deleting all local Kafka data")
    p.set_defaults(func=cmd_kafka_reset)
    p = kafka_cmds.add_parser(
        "client-config", help="print a librdkafka (kcat) configuration for a principal"
    )
    p.add_argument("--principal", default="reader", help="who the client is (reader)")
    p.add_argument(
        "--mtls", action="store_true", help="a client certificate instead of SCRAM (local only)"
    )
    p.add_argument("--nodes", type=int, choices=(1, 3), default=1, help="the local cluster")
    p.set_defaults(func=cmd_kafka_client_config)
    acls = kafka_cmds.add_parser("acls", help="the ACLs of deploy/kafka/acls.yaml")
    acl_cmds = acls.add_subparsers(dest="acl_action", required=True, metavar="ACTION")
    p = acl_cmds.add_parser(
        "show", help="the file's ACLs for C2BUS_TOPIC_PREFIX and whether Kafka has each"
    )
    p.add_argument("--file-only", action="store_true", help="print the file's ACLs only")
    p.set_defaults(func=cmd_kafka_acls_show)
    p = acl_cmds.add_parser("apply", help="grant the file's ACLs for C2BUS_TOPIC_PREFIX")
    p.set_defaults(func=cmd_kafka_acls_apply)
    principal = kafka_cmds.add_parser(
        "principal", help="add or remove a principal in a role of deploy/kafka/acls.yaml"
    )
    principal_cmds = principal.add_subparsers(
        dest="principal_action", required=True, metavar="ACTION"
    )
    p = principal_cmds.add_parser(
        "add", help="a credential, the role's ACLs and a client configuration for NAME"
    )
    p.add_argument("--role", required=True, help="a role of deploy/kafka/acls.yaml (e.g. sensor)")
    p.add_argument("name", help="the principal: lower-case letters, digits, '.', '_', '-'")
    p.set_defaults(func=cmd_kafka_principal_add)
    p = principal_cmds.add_parser("remove", help="revoke NAME's ACLs and delete its credential")
    p.add_argument("name")
    p.set_defaults(func=cmd_kafka_principal_remove)

    topics = commands.add_parser("topics", help="the c2bus topics")
    topic_cmds = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = topic_cmds.add_parser("create", help="create every missing c2bus topic (idempotent)")
    p.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        metavar="N",
        help="default: min(3, brokers); min.insync.replicas is 2 when N >= 3",
    )
    p.set_defaults(func=cmd_topics_create)
    p = topic_cmds.add_parser("list", help="list the topics c2bus uses and their layout")
    p.set_defaults(func=cmd_topics_list)

    p = commands.add_parser(
        "up",
        help="run everything: Kafka, topics, ingest, enforcer, gateway, simulator, Prometheus",
    )
    sim_command.add_traffic_options(p)
    p.add_argument("--no-sim", action="store_true", help="do not start the simulator")
    p.add_argument(
        "--no-prometheus",
        action="store_true",
        help="do not start Prometheus (started by default when installed, on "
        "C2BUS_PROMETHEUS_PORT, default 9090)",
    )
    p.set_defaults(func=cmd_up)

    p = commands.add_parser("serve", help="run one service in the foreground")
    p.add_argument("service", choices=("ingest", "enforcer", "policy_api", "gateway"))
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("sim", help="publish simulated tracks and directives to Kafka")
    sim_command.add_arguments(p)
    p.set_defaults(func=cmd_sim)

    keys = commands.add_parser("keys", help="record-signing keys and the trust store")
    keys_cmds = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = keys_cmds.add_parser(
        "init", help="make the local signing keys (enforcer, ingest, gateway) and trust them"
    )
    p.set_defaults(func=cmd_keys_init)
    p = keys_cmds.add_parser("show", help="print the trust store: key id, name, what it signs")
    p.set_defaults(func=cmd_keys_show)

    p = commands.add_parser("token", help="mint a token with the local key (development)")
    _add_identity_options(p)
    p.add_argument("--ttl", type=int, default=8 * 3600, metavar="S", help="lifetime (8 h)")
    p.set_defaults(func=cmd_token)

    p = commands.add_parser("console", help="a terminal console on the gateway")
    _add_identity_options(p)
    p.add_argument("--url", default=None, help="gateway URL (default ws://127.0.0.1:8765)")
    p.add_argument("--token", default=None, help="use this token instead of minting one")
    p.add_argument(
        "--streams",
        default="sa,directives,decisions,status",
        help="comma-separated streams: sa, directives, decisions, status (all)",
    )
    p.add_argument("--plain", action="store_true", help="one line per event, no screen")
    p.add_argument("--count", type=int, default=None, help="exit after N events")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="exit after S")
    p.set_defaults(func=cmd_console)

    p = commands.add_parser(
        "trace",
        help="one directive's timeline from Kafka: submitted, decided, delivered, acknowledged",
        description="Print one directive's timeline, read back from the directive topics "
        "(<prefix>.directives.submitted, .decisions, .directives.status, "
        ".directives.approved, .directives.held; read_committed): submitted, approvals, "
        "decided (verdict, policy version, every reason), delivered (once per console "
        "session), WILCO / CANTCO (with its reason) / HAVE_DO, each with its time and the "
        "time since the step before, and the total. Records that do not decode are skipped "
        "and counted.",
        epilog="Exit status: 0 when the directive was found, 1 when it was not found in the "
        "window or Kafka could not be read, 2 for usage errors.",
    )
    p.add_argument("directive_id", metavar="DIRECTIVE_ID", help="the directive's id")
    p.add_argument(
        "--since",
        type=_duration,
        default="24h",
        metavar="DURATION",
        help="how far back to search, by Kafka record time: e.g. 30m, 6h, 1h30m, 7d (24h)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=60.0,
        metavar="S",
        help="give up if the search takes longer than S seconds (60)",
    )
    p.add_argument("--json", action="store_true", help="print the trace as JSON, for scripts")
    p.set_defaults(func=cmd_trace)

    audit = commands.add_parser("audit", help="the decisions topic as evidence")
    audit_cmds = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = audit_cmds.add_parser(
        "verify",
        help="check every decision's signature and the audit chain; name each bad record",
        description="Read <prefix>.decisions (read_committed, as the reader principal) and "
        "check, per partition in offset order, that every record is a decision signed by a "
        "key the trust store trusts for decisions (C2BUS_TRUST_FILE, or the local one) and "
        "that it names the record before it (digest and sequence number). Each record that "
        "fails is printed with its partition, offset and what is wrong; the records after it "
        "are checked against the last good one, so a forged or replayed record is named "
        "alone. The enforcer's signed checkpoints (<prefix>.audit.checkpoints) are read "
        "first: a partition that ends before its newest checkpoint, or holds another record "
        "at its sequence number, had records removed from its end, and is named.",
        epilog="Exit status: 0 when every record verified, 1 when any did not (or Kafka or "
        "the trust store could not be read), 2 for usage errors.",
    )
    p.add_argument(
        "--since",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="check only records from this long ago (by Kafka record time: 30m, 6h, 7d); "
        "the first signed record read anchors each partition (default: from the beginning, "
        "where each chain must begin)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=None,
        metavar="S",
        help="give up when the read makes no progress for S seconds (the request timeout)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON, for scripts")
    p.set_defaults(func=cmd_audit_verify)

    p = commands.add_parser(
        "bench",
        help="run the benchmarks against their baselines: one table, JSON, plots (make bench)",
        add_help=False,
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_bench)

    cli_policy.register(commands)

    schemas = commands.add_parser("schemas", help="the published JSON Schemas")
    schema_cmds = schemas.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = schema_cmds.add_parser("export", help="write schemas/ from the code's event types")
    p.add_argument("--dir", default=str(project_root() / "schemas"), help="target folder")
    p.add_argument("--check", action="store_true", help="fail if the files differ; write none")
    p.set_defaults(func=cmd_schemas_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["bench"]:
        # Everything after `bench` is the harness's own (its --help too).
        args = argparse.Namespace(func=cmd_bench, bench_args=given[1:])
    else:
        args = parser.parse_args(given)
    # aiokafka logs every refused connection; the commands report failures themselves.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except C2BusError as exc:
        print(f"c2bus: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("c2bus: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
