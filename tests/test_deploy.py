"""Dashboards and alerts name only metrics the worker exports (they cannot drift silently)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import worker.metrics  # noqa: F401  (registers every metric)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
_NAME = re.compile(r"\b((?:flyt|xledger)_[a-z_]+)")


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> set[str]:
    """Every series name the worker can expose (labelled ones have no sample until used)."""
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


def test_grafana_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/flyt-xledger.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in _NAME.findall(e)}
    assert used and used <= exported(), used - exported()


def test_alert_rules_use_only_exported_metrics() -> None:
    used = set(_NAME.findall((DEPLOY / "prometheus/alerts.yml").read_text()))
    assert used and used <= exported(), used - exported()
