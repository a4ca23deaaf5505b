"""The deploy files agree with the code (dashboards and alerts: test_dashboards.py)."""

from __future__ import annotations

import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


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


def test_the_reconcile_cronjob_runs_the_previous_month_on_the_2nd_and_serves_its_result() -> None:
    import yaml
    from click.testing import CliRunner

    from worker.cli import main

    (job,) = yaml.safe_load_all((DEPLOY / "kubernetes/reconcile.yaml").read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["schedule"] == "30 2 2 * *" and job["spec"]["timeZone"] == "Europe/Oslo"
    spec = job["spec"]["jobTemplate"]["spec"]
    # Differences (5), incomplete (6), a setting that cannot work (78): not run again.
    (rule,) = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [5, 6, 78]
    pod = spec["template"]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert args[0] == "reconcile" and pod["spec"]["restartPolicy"] == "Never"
    assert args[args.index("--month") + 1] == "previous"
    port, linger = args[args.index("--metrics-port") + 1], float(args[args.index("--linger") + 1])
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == port
    assert linger >= 120  # several scrapes at the usual interval see the result
    assert container["envFrom"] == [{"configMapRef": {"name": "flyt-xledger-worker"}}]
    tokens = {"name": "xledger-tokens", "mountPath": "/var/run/secrets/xledger", "readOnly": True}
    assert tokens in container["volumeMounts"]
    helped = CliRunner().invoke(main, ["reconcile", "--help"]).output
    assert all(a in helped for a in args[1:] if a.startswith("--"))


def test_prometheus_scrapes_the_workers_of_every_compose_profile() -> None:
    import yaml

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    workers = {name for name, svc in compose.items() if "FLYT_METRICS_PORT" in str(svc)}
    assert workers >= {"worker", "worker-three"}
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "flyt-xledger-worker"]
    names = {n for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert names == workers
