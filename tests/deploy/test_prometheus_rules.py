"""The Prometheus configuration and alert rules under ``deploy/prometheus``, checked by
Prometheus's own ``promtool``: the files load, and each alert fires and resolves as its
unit tests say (``deploy/prometheus/tests``)."""

from __future__ import annotations

import subprocess

import yaml

from tests.conftest import ROOT, require_tool

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_scrape_config_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rule files found" in result.stdout  # the rules are part of the config


def test_rules_are_valid() -> None:
    assert RULES, "no rule files"
    result = promtool("check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_resolves_in_its_unit_test() -> None:
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {
        rule["alert"]
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested: dict[str, set[str]] = {}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                outcome = "fires" if check.get("exp_alerts") else "quiet"
                tested.setdefault(check["alertname"], set()).add(outcome)
    for alert in sorted(alerts):
        assert tested.get(alert) == {"fires", "quiet"}, (
            f"{alert}: the unit tests must show it both firing and not firing"
        )


def test_every_operational_alert_is_defined() -> None:
    names = {
        rule.get("alert")
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    assert {
        "C2busEnforcerDown",
        "C2busConsumerLagGrowing",
        "C2busDeadLetters",
        "C2busDenialSpike",
        "C2busPolicyLoadFailure",
        "C2busSaSilence",
        "C2busSlowConsoleDisconnects",
        "C2busTransactionAborts",
        "C2busKafkaRefused",
        "C2busUnverifiedRecords",
    } <= names
