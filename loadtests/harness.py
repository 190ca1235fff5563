"""The benchmark harness: ``make bench`` / ``c2bus bench`` / ``python -m loadtests``.

Runs the scenarios (each in its own module, each measuring c2bus against a baseline in
the same run), shows progress on stderr, prints one table, writes the results as JSON
and draws the latency distributions as PNG plots:

    python -m loadtests [--only NAME,...] [--quick] [--out DIR] [--bootstrap HOST:PORT]

Kafka scenarios share one local broker of their own (port 29092, under ``.c2bus/bench``),
started on first use and stopped at the end, unless ``--bootstrap`` (or
``C2BUS_KAFKA_BOOTSTRAP``) names a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from . import (
    decode,
    e2e,
    enforcer_txn,
    gateway_fanout,
    policy_eval,
    restore,
    security,
    signing,
)
from .core import ROOT, Bench, Result

DEFAULT_OUT = ROOT / ".c2bus" / "bench" / "results"


Scenario = Callable[[Bench], list[Result]]


def scenarios() -> dict[str, Scenario]:
    """Every scenario by name, in the order the table lists them."""
    return {
        "enforcer": enforcer_txn.scenario,
        "restore": restore.scenario,
        "decode": decode.scenario,
        "policy": policy_eval.scenario,
        "fanout": gateway_fanout.scenario,
        "sa-e2e": e2e.sa_scenario,
        "directive-e2e": e2e.directive_scenario,
        "pipeline": e2e.pipeline_scenario,
        "security": security.scenario,
        "signing": signing.scenario,
    }


# --- output ------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    header = ("scenario", "ours", "baseline (same run)", "ratio", "goal", "met")
    rows = [header]
    for r in results:
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f} {r.ratio_label}".strip()
        met = "—" if r.met is None else ("yes" if r.met else "NO")
        rows.append((r.scenario, r.ours, r.baseline, ratio, r.goal, met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        return "unknown"

    packages = ("aiokafka", "websockets", "msgspec", "orjson", "prometheus-client", "fastapi")
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "java": version(["java", "-version"]),
        "kafka": _kafka_version(),
        "packages": {p: package_version(p) for p in packages},
    }


def _kafka_version() -> str:
    with contextlib.suppress(OSError, ValueError):
        text = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
        start = text.index("<kafka.version>") + len("<kafka.version>")
        return text[start : text.index("<", start)]
    return "unknown"


def plot(results: list[Result], out: Path) -> list[Path]:
    """A latency distribution (empirical CDF, log scale) per scenario with samples."""
    if not any(r.samples for r in results):
        return []
    try:
        import matplotlib  # noqa: PLC0415 (heavy: loaded only to draw)
    except ModuleNotFoundError:
        print(
            "no plots: matplotlib is not installed (make bench installs it, or "
            "pip install -e '.[bench]')",
            file=sys.stderr,
        )
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: PLC0415

    written = []
    for result in results:
        if not result.samples:
            continue
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        for label, samples in result.samples.items():
            if not samples:
                continue
            ordered = sorted(samples)
            ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            (line,) = ax.plot(ordered, ys, label=f"{label} (n={len(ordered):,})")
            ax.axvline(p99, color=line.get_color(), linestyle="--", linewidth=0.8)
            ax.annotate(f"p99 {p99:.0f} ms", (p99, 0.5), rotation=90, fontsize=8, ha="right")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of messages")
        ax.set_title(result.scenario)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = out / f"{slug(result.scenario)}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    known = list(scenarios())
    parser = argparse.ArgumentParser(
        prog="c2bus bench",
        description="Run the c2bus benchmarks, each against a baseline measured in the same "
        "run; print one table, write results.json and latency plots (PNG).",
    )
    parser.add_argument(
        "--only", default="", metavar="NAMES", help=f"comma-separated, of: {', '.join(known)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller runs: to check the harness, not to quote"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--bootstrap", default=None, help="an existing Kafka cluster (default: a local broker)"
    )
    args = parser.parse_args(argv)
    chosen = [n for n in args.only.split(",") if n] or known
    unknown = [n for n in chosen if n not in known]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(known)}")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        bench = Bench(args.quick, args.bootstrap or os.environ.get("C2BUS_KAFKA_BOOTSTRAP"), stack)
        all_scenarios = scenarios()
        for i, name in enumerate(chosen, 1):
            bench.scenario = name
            bench.say(f"starting ({i} of {len(chosen)})")
            started = time.monotonic()
            results += all_scenarios[name](bench)
            bench.say(f"done in {time.monotonic() - started:.0f}s")
    doc = {
        "machine": machine(),
        "quick": args.quick,
        "seconds": round(time.monotonic() - began, 1),
        "results": [r.as_json() for r in results],
    }
    (args.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    plots = plot(results, args.out)
    print()
    print(table(results))
    print()
    print(f"results: {args.out / 'results.json'}")
    for path in plots:
        print(f"plot:    {path}")
    return 0
