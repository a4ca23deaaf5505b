"""Apache Kafka as production runs it: clients on a SASL_SSL listener only (SCRAM-SHA-512,
TLS with a CA made for the test, users created when the storage is formatted). The demo
runs through it with the ledger exact, an operator tool reads it with --command-config,
and a wrong password or CA is one clear line and exit 78, never a retry loop, with the
password in no output. One cluster, shared by the tests here."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import require_kafka
from tests.ledger import assert_ledger_exactly_once
from tests.processes import run_worker, subprocess_env
from worker.devenv.sandbox import held_lines, lines_by_payment

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    require_kafka()
    from worker.devenv.kafka_cluster import KafkaCluster

    logs = tmp_path_factory.mktemp("kafka-sasl-ssl")
    with KafkaCluster(brokers=1, log_dir=logs, sasl_ssl=True) as cluster:
        yield cluster


def _password(cluster: object) -> str:
    return cluster.client.password_file.read_text().strip()  # type: ignore[attr-defined]


def test_the_demo_runs_through_sasl_ssl_with_the_ledger_exact(
    secured: object, tmp_path: Path
) -> None:
    cluster = secured
    client = cluster.client  # type: ignore[attr-defined]
    ledger = tmp_path / "ledger.jsonl"
    demo = subprocess.run(
        [
            *(sys.executable, "-m", "worker", "demo", "--events", "300", "--bad", "5"),
            *("--bootstrap", cluster.bootstrap),  # type: ignore[attr-defined]
            *("--command-config", str(client.properties)),
            *("--ledger-out", str(ledger), "--timeout", "180"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    assert summary["events"] == 305 and summary["unaccounted"] == 0
    assert summary["posted"] > 0 and summary["dead_lettered"] >= 5
    lines = [json.loads(x) for x in ledger.read_text().splitlines()]
    vouchers = lines_by_payment(held_lines(lines))
    assert len(vouchers) == summary["posted"]
    assert_ledger_exactly_once(lines, set(vouchers))
    assert _password(cluster) not in demo.stdout + demo.stderr

    # An operator tool reads the same cluster as Kafka's own tools would: --command-config.
    stats = subprocess.run(
        [
            *(sys.executable, "-m", "worker", "dlq", "stats", "--json"),
            *("--bootstrap", cluster.bootstrap),  # type: ignore[attr-defined]
            *("--command-config", str(client.properties)),
            *("--topic", summary["topics"]["dlq"]),
        ],
        env=subprocess_env({}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stats.returncode == 0, stats.stderr[-2000:]
    assert _password(cluster) not in stats.stdout + stats.stderr


def _other_ca(folder: Path) -> Path:
    """A CA that signed nothing of the cluster's."""
    folder.mkdir()
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-noenc"),
            *("-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.pem")),
            *("-days", "1", "-subj", "/CN=someone-else"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return folder / "ca.pem"


@pytest.mark.parametrize("wrong", ["password", "ca"])
def test_a_wrong_password_or_ca_is_one_clear_line_and_exit_78(
    secured: object, tmp_path: Path, wrong: str
) -> None:
    cluster = secured
    client = cluster.client  # type: ignore[attr-defined]
    env = {
        "FLYT_BOOTSTRAP_SERVERS": cluster.bootstrap,  # type: ignore[attr-defined]
        "FLYT_METRICS_PORT": "0",
        "FLYT_REPLICATION_FACTOR": "1",
        "FLYT_MIN_INSYNC_REPLICAS": "1",
        **client.env(),
    }
    typo = "not-" + _password(cluster)
    if wrong == "password":
        bad = tmp_path / "password"
        bad.write_text(typo + "\n")
        env["FLYT_KAFKA_SASL_PASSWORD_FILE"] = str(bad)
        said = "refused the credentials"
    else:
        env["FLYT_KAFKA_SSL_CA_FILE"] = str(_other_ca(tmp_path / "other-ca"))
        said = "cannot vouch for"
    # The timeout only guards the test run: a retry loop would never exit by itself.
    proc = run_worker(env)
    assert proc.returncode == 78, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert said in lines[0] and "Traceback" not in proc.stderr
    for secret in (_password(cluster), typo):
        assert secret not in proc.stdout + proc.stderr
