"""The fault suite's three-node cluster (one per session, its own ports and home) and the
report table printed at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from c2bus.adapters.settings import project_root
from c2bus.tools.localkafka import LocalCluster
from tests.faults.harness import Report, Scale
from tests.integration.conftest import local_settings

PORT = "27092"  # below the ephemeral range (32768+), where client sockets live
REPORTS: list[Report] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "faults" in item.path.parts:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def fault_cluster() -> Iterator[LocalCluster]:
    home = project_root() / ".c2bus" / "faults"
    cluster = LocalCluster(local_settings(C2BUS_HOME=str(home), C2BUS_KAFKA_PORT=PORT), nodes=3)
    cluster.stop()
    cluster.reset()
    cluster.start(progress=lambda line: print(f"[faults] {line}", flush=True))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def scale() -> Scale:
    return Scale.from_env()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    write = terminalreporter.write_line
    write("")
    write("fault suite: invariants per scenario (read_committed output against the oracle)")
    header = (
        f"{'scenario':<18}{'in':>7}{'decided':>9}{'dup':>5}{'lost':>6}{'order':>7}"
        f"{'verdict':>9}{'appr≠allow':>11}{'chain':>7}{'aborted':>9}{'lane fail':>10}{'fenced':>8}"
        f"{'recover s':>11}{'drain s':>9}  result"
    )
    write(header)
    for r in REPORTS:
        mismatched = r.approved_not_allowed + r.allowed_not_approved
        result = "ok" if not r.violations else "FAILED: " + ", ".join(r.violations)
        write(
            f"{r.scenario:<18}{r.directives_in:>7}{r.decisions_out:>9}"
            f"{r.duplicates + r.concurrent_duplicates:>5}{r.lost:>6}{r.order_violations:>7}"
            f"{r.wrong_verdicts:>9}{mismatched:>11}{r.chain_breaks:>7}{r.aborted_records:>9}{r.lane_failures:>10}"
            f"{r.fenced:>8}"
            f"{r.recover_s:>11.1f}{r.drain_s:>9.1f}  {result}"
        )
    write(
        "dup: duplicates in the final read plus those seen by a concurrent read_committed "
        "consumer; chain: decisions breaking their partition's audit chain (`c2bus audit verify`"
        "'s check); "
        "aborted: records only a read_uncommitted consumer saw (aborted "
        "transactions); lane fail / fenced: partition lanes failed and set up again (of them, "
        "refused as fenced); recover: heal -> input at the heal decided; drain: end of load -> "
        "lag 0"
    )
