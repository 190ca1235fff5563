"""Java, Maven and the Kafka jars: found, checked and fetched with one-line errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from c2bus.errors import LocalKafkaError

MIN_JAVA = 17
_JAVA_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')
_KAFKA_VERSION_RE = re.compile(r"<kafka\.version>([^<]+)</kafka\.version>")
_COMPLETE = ".complete"

Progress = Callable[[str], None]


def kafka_version(deploy_dir: Path) -> str:
    """The Kafka version pinned in ``deploy/kafka/pom.xml`` (the single source of truth)."""
    pom = deploy_dir / "kafka" / "pom.xml"
    try:
        match = _KAFKA_VERSION_RE.search(pom.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LocalKafkaError(
            f"cannot read {pom}: set C2BUS_DEPLOY_DIR to the project's deploy/ folder"
        ) from exc
    if not match:
        raise LocalKafkaError(f"{pom} has no <kafka.version> property")
    return match.group(1).strip()


def find_java() -> Path:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, checked to be Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate: str | None
    if java_home:
        candidate = str(Path(java_home) / "bin" / "java")
        if not Path(candidate).is_file():
            raise LocalKafkaError(
                f"JAVA_HOME={java_home} has no bin/java: point JAVA_HOME at a Java "
                f"{MIN_JAVA}+ installation or unset it"
            )
    else:
        candidate = shutil.which("java")
    if not candidate:
        raise LocalKafkaError(
            f"Java not found: install Java {MIN_JAVA}+ (e.g. apt-get install "
            "openjdk-17-jre-headless) or set JAVA_HOME"
        )
    try:
        out = subprocess.run(
            [candidate, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"cannot run {candidate} -version: {exc}") from exc
    match = _JAVA_VERSION_RE.search(out.stderr + out.stdout)
    if not match:
        raise LocalKafkaError(f"cannot tell the version of {candidate}: is it a Java runtime?")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_…" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise LocalKafkaError(
            f"Java {MIN_JAVA}+ is required, found Java {major} at {candidate}: install "
            f"OpenJDK {MIN_JAVA} or set JAVA_HOME to a newer Java"
        )
    return Path(candidate)


@dataclass(frozen=True, slots=True)
class Toolchain:
    """Everything needed to run a broker: a Java binary and the broker's jar directory."""

    java: Path
    libs: Path
    version: str

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")

    @classmethod
    def prepare(cls, deploy_dir: Path, jars_dir: Path, progress: Progress) -> Toolchain:
        """Check Java, and fetch the jars with Maven unless they are cached already."""
        java = find_java()
        libs = fetch_jars(deploy_dir, jars_dir, progress)
        return cls(java=java, libs=libs, version=kafka_version(deploy_dir))


def fetch_jars(deploy_dir: Path, jars_dir: Path, progress: Progress) -> Path:
    """Resolve the broker's runtime classpath into ``jars_dir/kafka-<version>`` (once)."""
    version = kafka_version(deploy_dir)
    target = jars_dir / f"kafka-{version}"
    if (target / _COMPLETE).is_file():
        return target
    mvn = shutil.which("mvn")
    if not mvn:
        raise LocalKafkaError(
            f"Maven not found: it is needed once to fetch the Kafka {version} jars from Maven "
            "Central (e.g. apt-get install maven)"
        )
    jars_dir.mkdir(parents=True, exist_ok=True)
    progress(f"fetching Kafka {version} jars from Maven Central (first run only)…")
    with tempfile.TemporaryDirectory(dir=jars_dir, prefix=".fetch-") as tmp:
        staging = Path(tmp) / "libs"
        cmd = [
            mvn,
            "-B",
            "-ntp",
            "-q",
            "-f",
            str(deploy_dir / "kafka" / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(
                "Maven took over 15 minutes to fetch the Kafka jars: is Maven Central reachable?"
            ) from exc
        if out.returncode != 0:
            errors = [line for line in (out.stdout + out.stderr).splitlines() if "ERROR" in line]
            detail = errors[0].strip() if errors else f"exit status {out.returncode}"
            raise LocalKafkaError(
                f"Maven could not fetch the Kafka {version} jars (is Maven Central reachable?): "
                f"{detail}"
            )
        jars = sorted(staging.glob("*.jar"))
        if not any(j.name.startswith("kafka_2.13-") for j in jars):
            raise LocalKafkaError(f"Maven finished but no kafka_2.13 jar arrived in {staging}")
        (staging / _COMPLETE).write_text(f"{version}\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    progress(f"fetched {len(jars)} jars into {target}")
    return target
