"""The deploy files agree with the code (dashboards and alerts: test_dashboards.py)."""

from __future__ import annotations

import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_compose_runs_the_apache_kafka_version_the_tests_run() -> None:
    from worker.devenv.kafka_cluster import kafka_version

    compose = (DEPLOY / "compose.yaml").read_text()
    images = re.findall(r"image: apache/kafka:(\S+)", compose)
    assert images and set(images) == {kafka_version()}
    assert "profiles: [three]" in compose and "kafka-3:" in compose  # the three-broker profile


def test_kubernetes_sets_replication_for_a_three_broker_cluster() -> None:
    manifest = (DEPLOY / "kubernetes/worker.yaml").read_text()
    assert re.search(r'^\s+FLYT_REPLICATION_FACTOR: "3"$', manifest, re.M)
    assert re.search(r'^\s+FLYT_MIN_INSYNC_REPLICAS: "2"$', manifest, re.M)
    assert re.search(r"^\s+FLYT_BROKER_KIND: kafka\b", manifest, re.M)
