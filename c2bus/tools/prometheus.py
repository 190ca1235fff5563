"""A local Prometheus for ``c2bus up``: the operator's scrape config and alert rules from
``deploy/prometheus``, pointed at the ports the services really use.

Prometheus itself is not a Python package: ``c2bus up`` starts it when a ``prometheus``
binary is on the PATH (Debian's package ``prometheus``; ``make prometheus`` installs it),
and says so when it is not.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from c2bus.adapters.ops import answers
from c2bus.adapters.settings import project_root
from c2bus.errors import C2BusError

DEPLOY = project_root() / "deploy" / "prometheus"
READY_TIMEOUT_S = 30.0

#: scrape job name (as in deploy/prometheus/prometheus.yml) → c2bus service
JOBS = {
    "c2bus-ingest": "ingest",
    "c2bus-enforcer": "enforcer",
    "c2bus-policy-api": "policy_api",
    "c2bus-gateway": "gateway_ops",  # the ops listener, not the console port
}


def local_config(
    host: str,
    ports: Mapping[str, int],
    prometheus_port: int,
    *,
    scrape_interval_s: float | None = None,
    template: Path = DEPLOY / "prometheus.yml",
) -> dict[str, Any]:
    """The deploy config with each job's target set to ``host`` and the service's port,
    and the rule files as absolute paths (the config is written elsewhere)."""
    config: dict[str, Any] = msgspec.yaml.decode(template.read_bytes(), type=dict[str, Any])
    base = template.parent
    config["rule_files"] = [str(base / pattern) for pattern in config.get("rule_files", [])]
    if scrape_interval_s is not None:
        interval = f"{int(scrape_interval_s * 1000)}ms"
        config["global"]["scrape_interval"] = interval
        config["global"]["evaluation_interval"] = interval
        config["global"]["scrape_timeout"] = interval
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name == "prometheus":
            port = prometheus_port
        elif name in JOBS and JOBS[name] in ports:
            port = ports[JOBS[name]]
        else:
            continue
        job["static_configs"] = [{"targets": [f"{host}:{port}"]}]
    return config


class LocalPrometheus:
    """One Prometheus process with its data and log under ``home/prometheus``."""

    def __init__(self, home: Path, host: str, port: int, config: dict[str, Any]) -> None:
        self.home = home / "prometheus"
        self.host = host
        self.port = port
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.home / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("prometheus")

    def start(self, progress: Callable[[str], None]) -> None:
        binary = self.binary()
        if binary is None:
            raise C2BusError("prometheus is not installed (Debian: make prometheus)")
        self.home.mkdir(parents=True, exist_ok=True)
        config_file = self.home / "prometheus.yml"
        config_file.write_bytes(msgspec.yaml.encode(self.config))
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={self.home / 'data'}",
                    "--storage.tsdb.retention.time=2d",
                    f"--web.listen-address={self.host}:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not answers(f"{self.url}/-/ready"):
            if self.process.poll() is not None:
                raise C2BusError(
                    f"prometheus exited with status {self.process.returncode}; see {self.log}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise C2BusError(f"prometheus not ready after {READY_TIMEOUT_S:g}s; see {self.log}")
            time.sleep(0.3)
        progress(f"Prometheus is ready at {self.url} (pid {self.process.pid})")

    def stop(self, grace_s: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
