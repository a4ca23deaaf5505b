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


def test_compose_runs_the_apache_kafka_version_the_tests_run() -> None:
    from worker.stream.kafka_cluster import kafka_version

    compose = (DEPLOY / "compose.yaml").read_text()
    images = re.findall(r"image: apache/kafka:(\S+)", compose)
    assert images and set(images) == {kafka_version()}
    assert "profiles: [three]" in compose and "kafka-3:" in compose  # the three-broker profile


def test_kubernetes_sets_replication_for_a_three_broker_cluster() -> None:
    manifest = (DEPLOY / "kubernetes/worker.yaml").read_text()
    assert re.search(r'^\s+FLYT_REPLICATION_FACTOR: "3"$', manifest, re.M)
    assert re.search(r'^\s+FLYT_MIN_INSYNC_REPLICAS: "2"$', manifest, re.M)
    assert re.search(r"^\s+FLYT_BROKER_KIND: kafka\b", manifest, re.M)
