"""`python -m worker run` on the embedded default (what `make run` does)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.brokers import Broker
from tests.processes import free_port, run_worker, subprocess_env
from tests.stream_helpers import metric, scrape
from tests.waiting import until_async

pytestmark = pytest.mark.integration


async def test_embedded_run_shows_payments_flowing_within_a_minute(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "run.log"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--embedded", "--metrics-port", str(port)],
        env=subprocess_env({}),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:

        async def posted() -> float:
            return metric(await scrape(port), "xledger_payments_total", result="posted")

        await until_async(posted, 60, "the first payments posted to the sandbox")
        print(f"\nfirst payments posted {time.monotonic() - t0:.1f} s after start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # a clean stop on SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert "worker_ready" in text and "Traceback" not in text


@pytest.mark.parametrize("args", [[], ["--bootstrap", ""]], ids=["no-setting", "empty-flag"])
def test_run_without_a_broker_fails_loudly_instead_of_running_a_demo(args: list[str]) -> None:
    # A production pod with a missing setting must not look healthy while posting to a sandbox.
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "run", *args],
        env=subprocess_env({"FLYT_BOOTSTRAP_SERVERS": ""}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    for named in ("FLYT_BOOTSTRAP_SERVERS", "--bootstrap", "--embedded"):
        assert named in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_on_too_few_brokers_for_the_replication_factor_says_what_to_set(
    broker: Broker,
) -> None:
    # Production's profile on Apache Kafka wants 3 copies; the test broker is one.
    env = {**broker.env(), "FLYT_REPLICATION_FACTOR": "3", "FLYT_METRICS_PORT": "0"}
    proc = run_worker(env)
    assert proc.returncode != 0
    assert "FLYT_REPLICATION_FACTOR" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"FLYT_REBALANCE_TIMEOUT_S": "10"}, "FLYT_REBALANCE_TIMEOUT_S"),
        ({"FLYT_PARTITIONS": "many"}, "FLYT_PARTITIONS"),
    ],
    ids=["conflict", "unreadable"],
)
def test_settings_that_cannot_work_exit_78_not_1_so_no_restart_is_mistaken_for_a_cure(
    broker: Broker, setting: dict[str, str], named: str
) -> None:
    """EX_CONFIG (78) tells an operator, a supervisor (the chaos campaign's) and Kubernetes'
    exit code apart: a setting to change, not a crash a restart may cure."""
    env = {**broker.env(), "FLYT_METRICS_PORT": "0", **setting}
    proc = run_worker(env)
    assert proc.returncode == 78
    assert named in proc.stderr and "Traceback" not in proc.stderr
