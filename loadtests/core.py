"""What the benchmark scenarios share: the result row and the run's context."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from c2bus.adapters.settings import KafkaSettings, LocalKafkaSettings, project_root
from c2bus.tools.localkafka import LocalCluster

ROOT = project_root()
BENCH_PORT = "29092"


@dataclass
class Result:
    """One row of the table: our figure, the baseline's from the same run, their ratio and
    whether the goal is met.

    ``ratio`` is stated the way the goal is (``ratio_label`` says which way round);
    ``met`` is None where the issue sets no goal (a figure to report). ``samples`` holds
    latency samples in milliseconds by series (ours and the baseline's), for the plots.
    """

    scenario: str
    ours: str
    baseline: str
    ratio: float | None
    ratio_label: str
    goal: str
    met: bool | None
    figures: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("samples")
        return doc


class Bench:
    """What a scenario gets: progress output, the quick switch, and a shared broker."""

    def __init__(self, quick: bool, bootstrap: str | None, stack: contextlib.ExitStack) -> None:
        self.quick = quick
        self._bootstrap = bootstrap
        self._kafka: KafkaSettings | None = None
        self._cluster: LocalCluster | None = None
        self._stack = stack
        self._workdir: Path | None = None
        self.scenario = ""

    def say(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[bench {stamp}] {self.scenario}: {message}", file=sys.stderr, flush=True)

    def workdir(self) -> Path:
        """A private directory for the run's files, removed at the end."""
        if self._workdir is None:
            self._workdir = Path(self._stack.enter_context(tempfile.TemporaryDirectory()))
        return self._workdir

    def kafka(self) -> KafkaSettings:
        """The Kafka cluster to use, as its admin: the given one (credentials from the
        ``C2BUS_KAFKA_*`` variables), or a secured local broker started once."""
        if self._kafka is not None:
            return self._kafka
        if self._bootstrap is not None:
            env = {**os.environ, "C2BUS_KAFKA_BOOTSTRAP": self._bootstrap}
            self._kafka = KafkaSettings.from_env(env)
            return self._kafka
        settings = LocalKafkaSettings.from_env(
            {
                "C2BUS_HOME": str(ROOT / ".c2bus" / "bench"),
                "C2BUS_KAFKA_PORT": BENCH_PORT,
                # an open listener beside the secured one, to measure what security costs
                "C2BUS_KAFKA_PLAINTEXT_PORT": str(int(BENCH_PORT) + 100),
                **{k: v for k, v in os.environ.items() if k == "C2BUS_KAFKA_JARS_DIR"},
            }
        )
        cluster = LocalCluster(settings, nodes=1)
        self._cluster = cluster
        started = not cluster.status().running
        if started:
            cluster.reset()  # every run starts from empty topics
        cluster.start(progress=self.say)
        if started:
            self._stack.callback(cluster.stop, progress=self.say)
        self._kafka = cluster.client()
        return self._kafka

    def open_kafka(self) -> KafkaSettings:
        """The benchmark broker's open PLAINTEXT listener (anonymous super users): the
        baseline of what security costs. Only the local benchmark broker has one."""
        self.kafka()
        if self._cluster is None:
            raise RuntimeError(
                "the cost of security is measured on the local benchmark broker only"
            )
        return self._cluster.open_client()
