"""The alert rules (deploy/prometheus/alerts.yml): valid for Prometheus' own checker, and
every rule fires in a promtool unit test (deploy/prometheus/alerts_test.yml). Skipped,
and said so at the end of the run, where promtool is missing; CI installs it."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.deploy.queries import ALERTS, alert_rules
from tests.deploy.tools import prometheus_tool

UNIT_TESTS = ALERTS.parent / "alerts_test.yml"

pytestmark = pytest.mark.prometheus


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_tool("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ALERTS.parent,
    )


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", ALERTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = promtool("test", "rules", UNIT_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_rule_is_seen_firing_in_a_unit_test() -> None:
    doc = yaml.safe_load(UNIT_TESTS.read_text())
    assert doc["rule_files"] == [ALERTS.name]
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in alert_rules()} <= fired


def test_the_issue_s_alerts_exist_and_each_tells_what_to_do_first() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in (
        "ConsumerLagGrowing",
        "NoReceiptsWhileBetaltArrives",
        "TenantWithoutValidSnapshot",
        "DeadLettersGrowing",
        "XledgerCreditsExhausted",  # a tenant paused: credits
        "XledgerTokenRefused",  # a tenant paused: token
    ):
        assert name in rules
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], rule["alert"]
