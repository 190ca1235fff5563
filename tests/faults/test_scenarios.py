"""Exactly-once under faults: each scenario runs a paced load of directives through enforcer
processes on a three-broker cluster (replication 3, min ISR 2), injects its fault after real
progress, heals it, and checks the invariants against the oracle:

- every submitted directive has exactly one decision, with the verdict the policy gives;
- approved directives are exactly the allowed ones, once each, in submission order per key;
- a concurrent ``read_committed`` consumer never sees a record twice (aborted data);
- the input as it stood at the heal is decided within 60 s, and lag is 0 within 60 s of the
  load's end.

``make faults`` runs them with 30,000 directives each; ``make test`` runs them short.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition

from c2bus.adapters.kafka import client_options
from c2bus.adapters.settings import KafkaSettings
from c2bus.tools.localkafka import LocalCluster
from tests.faults.conftest import REPORTS
from tests.faults.harness import SESSION_TIMEOUT_MS, Scale, Scenario

Fault = Callable[[Scenario], Awaitable[None]]

# Killing or pausing a broker breaks TLS connections mid-handshake, and aiokafka leaves the
# sockets of those to the garbage collector (a library leak on a dead peer, not one of
# ours): its "unclosed" ResourceWarning is not an error here, and each scenario collects its
# garbage before it ends, so the warning cannot land in another test.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
SESSION_S = SESSION_TIMEOUT_MS / 1000


async def leader_of(kafka: KafkaSettings, topic: str, partition: int) -> int:
    client = AIOKafkaClient(**client_options(kafka))
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
    finally:
        await client.close()
    assert leader is not None and leader >= 0, f"{topic}-{partition} has no leader"
    return int(leader)


async def leader_under_load(s: Scenario) -> int:
    """Two enforcers, 30 % of the load decided: the broker leading input partition 0."""
    s.enforcer("a")
    s.enforcer("b")
    await s.progress(0.3)
    return await leader_of(s.kafka, s.topics.submitted, 0)


def run_scenario(
    name: str, cluster: LocalCluster, scale: Scale, log_dir: Path, fault: Fault
) -> None:
    scenario = Scenario(name, cluster.client(), log_dir, scale)
    report = asyncio.run(scenario.run(fault))
    gc.collect()  # the sockets of broken handshakes: see pytestmark
    REPORTS.append(report)
    scenario.log(
        f"in={report.directives_in} decided={report.decisions_out} dup={report.duplicates} "
        f"lost={report.lost} order={report.order_violations} aborted={report.aborted_records} "
        f"chain_breaks={report.chain_breaks} "
        f"fenced={report.fenced} recover={report.recover_s:.1f}s drain={report.drain_s:.1f}s"
    )
    assert not report.violations, report.violations


def test_enforcer_killed_three_times(
    fault_cluster: LocalCluster, scale: Scale, log_dir: Path
) -> None:
    async def fault(s: Scenario) -> None:
        enforcers = [s.enforcer("a"), s.enforcer("b")]
        for round_ in range(3):
            await s.progress(0.15 + 0.2 * round_)
            victim = enforcers[round_ % 2]
            victim.kill()
            s.log(f"kill -9 {victim.name} at {s.observer.decided} decided")
            await asyncio.sleep(1)
            enforcers[round_ % 2] = s.enforcer(f"{'ab'[round_ % 2]}{round_ + 1}")
        await s.healed()

    run_scenario("enforcer_kill", fault_cluster, scale, log_dir, fault)


def test_broker_killed_and_restarted(
    fault_cluster: LocalCluster, scale: Scale, log_dir: Path
) -> None:
    async def fault(s: Scenario) -> None:
        node = await leader_under_load(s)
        fault_cluster.kill_node(node)
        s.log(f"kill -9 broker {node} at {s.observer.decided} decided")
        await asyncio.sleep(10)
        await asyncio.to_thread(fault_cluster.start)
        s.log(f"broker {node} restarted")
        await s.healed()

    run_scenario("broker_kill", fault_cluster, scale, log_dir, fault)


def test_partition_leader_paused_past_its_session(
    fault_cluster: LocalCluster, scale: Scale, log_dir: Path
) -> None:
    async def fault(s: Scenario) -> None:
        node = await leader_under_load(s)
        fault_cluster.kill_node(node, signal.SIGSTOP)
        s.log(f"SIGSTOP broker {node} (leader of submitted-0) at {s.observer.decided} decided")
        try:
            await asyncio.sleep(15)  # past the broker session timeout (9 s)
        finally:
            fault_cluster.kill_node(node, signal.SIGCONT)
        s.log(f"SIGCONT broker {node}")
        await s.healed()

    run_scenario("leader_sigstop", fault_cluster, scale, log_dir, fault)


def test_paused_enforcer_is_fenced_when_it_comes_back(
    fault_cluster: LocalCluster, scale: Scale, log_dir: Path
) -> None:
    async def fault(s: Scenario) -> None:
        zombie = s.enforcer("zombie")
        s.enforcer("survivor")
        await s.progress(0.3)
        zombie.signal(signal.SIGSTOP)
        s.log(f"SIGSTOP {zombie.name} at {s.observer.decided} decided")
        try:
            await asyncio.sleep(2 * SESSION_S + 6)  # the survivor takes its partitions
        finally:
            zombie.signal(signal.SIGCONT)
        s.log(f"SIGCONT {zombie.name} at {s.observer.decided} decided")
        await s.healed()
        await asyncio.sleep(SESSION_S)  # give the zombie time to try its old transactions
        assert zombie.alive, "the paused enforcer should recover, not die"

    run_scenario("zombie_enforcer", fault_cluster, scale, log_dir, fault)


def test_rebalances_while_enforcers_come_and_go(
    fault_cluster: LocalCluster, scale: Scale, log_dir: Path
) -> None:
    async def fault(s: Scenario) -> None:
        first = s.enforcer("a")
        await s.progress(0.1)
        second = s.enforcer("b")
        await s.progress(0.25)
        s.enforcer("c")
        await s.progress(0.4)
        second.stop()
        s.log(f"stopped {second.name} at {s.observer.decided} decided")
        await s.progress(0.55)
        first.stop()
        s.log(f"stopped {first.name} at {s.observer.decided} decided")
        s.enforcer("d")
        await s.healed()

    run_scenario("rebalance", fault_cluster, scale, log_dir, fault)


@pytest.fixture(autouse=True)
def _keep_logs_on_failure(request: pytest.FixtureRequest, log_dir: Path) -> None:
    """Enforcer logs live in the test's tmp dir; say where on failure."""
    request.node.user_properties.append(("enforcer_logs", str(log_dir)))
