"""Observability: /healthz and /ready, the lag and state gauges on a real broker, the demo's
metrics against what deploy/ queries, and logs (the libraries' too) through structlog."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client.parser import text_string_to_metric_families

from tests.brokers import Broker
from tests.deploy.queries import all_queries, metric_names
from tests.factories import snapshot_dict
from tests.processes import subprocess_env
from tests.stream_helpers import prepare, scrape, unique_settings, wait_for
from worker import logs
from worker.build import build
from worker.engine.lag import LagMonitor
from worker.engine.topics import ensure_topics
from worker.health import HEALTH, Health, Readiness, serve
from worker.pipeline.topics import topic_specs
from worker.runtime import make_client, running_pipeline

# --- /healthz and /ready ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthz_fails_once_the_event_loop_has_been_silent_too_long() -> None:
    clock = FakeClock()
    health = Health(clock=clock, wedged_after_s=30)
    health.beat()
    clock.now += 30
    assert health.liveness() == (True, "alive")
    clock.now += 1
    alive, why = health.liveness()
    assert not alive and "wedged" in why
    assert health.readiness() == (False, why)  # a wedged worker is never ready
    health.beat()
    assert health.liveness() == (True, "alive")


def test_ready_follows_the_check_run_at_each_beat_and_ends_with_unwatch() -> None:
    health = Health(clock=FakeClock())
    assert health.readiness() == (False, "the stream processor is not running")
    state = [Readiness(False, "register cache catching up")]
    health.watch(lambda: state[0])
    health.beat()
    assert health.readiness() == (False, "register cache catching up")
    state[0] = Readiness(True, "ready: 8 input partitions assigned")
    assert not health.readiness()[0]  # not before the loop has run the check
    health.beat()
    assert health.readiness() == (True, "ready: 8 input partitions assigned")
    health.unwatch()
    assert not health.readiness()[0]


def test_a_failing_readiness_check_makes_the_worker_unready_not_the_heartbeat_stop() -> None:
    health = Health(clock=FakeClock())

    def broken() -> Readiness:
        raise KeyError("x")

    health.watch(broken)
    health.beat()
    assert health.readiness() == (False, "readiness check failed: KeyError")
    assert health.liveness()[0]


def test_the_server_answers_the_probes_and_metrics_over_http() -> None:
    clock = FakeClock()
    health = Health(clock=clock, wedged_after_s=30)
    served = serve(0, "127.0.0.1", health)  # no running loop here: no heartbeat task
    base = f"http://127.0.0.1:{served.port}"
    try:
        ready = httpx.get(f"{base}/ready")
        assert (ready.status_code, ready.text) == (503, "the stream processor is not running\n")
        assert httpx.get(f"{base}/healthz").status_code == 200
        health.watch(lambda: Readiness(True, "ready: 2 input partitions assigned"))
        health.beat()
        assert httpx.get(f"{base}/ready").status_code == 200
        metrics = httpx.get(f"{base}/metrics").text
        assert "flyt_worker_ready 1.0" in metrics and "flyt_consumer_lag_seconds" in metrics
        clock.now += 31  # the loop has not beaten for 31 s: wedged
        healthz = httpx.get(f"{base}/healthz")
        assert healthz.status_code == 503 and "wedged" in healthz.text
        assert httpx.get(f"{base}/ready").status_code == 503
    finally:
        served.close()
        health.unwatch()


# --- on a real broker ------------------------------------------------------------------


@pytest.mark.integration
async def test_lag_is_counted_from_the_group_s_commits_and_aged_by_the_oldest_record(
    broker: Broker,
) -> None:
    s = unique_settings(broker, "lag")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    topic = s.topics.payments
    base_ms = 1_700_000_000_000
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(5):  # partition 0: one record a second
            await producer.send_and_wait(topic, b"x", partition=0, timestamp_ms=base_ms + i * 1000)
        for i in range(2):  # partition 1: nothing committed by the group yet
            await producer.send_and_wait(topic, b"y", partition=1, timestamp_ms=base_ms + i * 500)
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=s.app_id, enable_auto_commit=False
    )
    await committer.start()
    try:  # the group has handled the first two records of partition 0
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "")})
    finally:
        await committer.stop()
    now = base_ms / 1000 + 100
    monitor = LagMonitor(broker.bootstrap, s.app_id, [topic], clock=lambda: now)
    await monitor.start()
    lags: dict[int, Any] = {}
    try:
        # A gauge refreshed every few seconds: on a topic just made, the broker may
        # answer an offsets request before it knows its new partitions' leaders (seen on
        # Apache Kafka under load); the next measure has them.
        for _ in range(10):
            lags = {p.partition: p for p in await monitor.measure()}
            if lags[0].records == 3 and lags[1].seconds > 0:
                break
            await asyncio.sleep(0.5)
    finally:
        await monitor.stop()
    assert (lags[0].records, lags[0].seconds) == (3, pytest.approx(98.0))  # record 2's age
    assert (lags[1].records, lags[1].seconds) == (2, pytest.approx(100.0))
    assert all((p.records, p.seconds) == (0, 0.0) for n, p in lags.items() if n > 1)


@pytest.mark.integration
async def test_a_running_worker_is_ready_and_reports_lag_parked_and_snapshot_age(
    broker: Broker,
) -> None:
    s = unique_settings(broker, "ready")
    snapshots = [snapshot_dict(tenant_id="t-a"), snapshot_dict(tenant_id="t-b")]
    await prepare(s, snapshots)
    served = serve(0, "127.0.0.1")  # the process's HEALTH, which running_pipeline watches
    ready_url = f"http://127.0.0.1:{served.port}/ready"
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.get(ready_url)).status_code == 503
            assert s.bootstrap
            async with running_pipeline(s, s.bootstrap, make_client(s)):

                async def ready() -> bool:
                    return (await http.get(ready_url)).status_code == 200

                await wait_for(ready, 90, "/ready to answer 200")
                assert "input partitions assigned" in (await http.get(ready_url)).text

                async def gauges() -> bool:
                    samples = await scrape(served.port)
                    return any(
                        name == "flyt_consumer_lag_records" and ("topic", s.topics.payments) in lbls
                        for name, lbls in samples
                    )

                await wait_for(gauges, 30, "the lag gauges of the worker's topics")
                samples = await scrape(served.port)
                tenants = {d["tenant_id"] for d in snapshots}
                for tenant in tenants:
                    assert samples[("flyt_rejections_parked", (("tenant", tenant),))] == 0
                    assert (
                        samples[("flyt_register_snapshot_age_seconds", (("tenant", tenant),))] > 0
                    )
                assert samples[("flyt_worker_ready", ())] == 1
                version, commit = build()
                info = (("commit", commit), ("version", version))
                assert samples[("flyt_build_info", info)] == 1 and version != "unknown"
            # stopped: not ready any more, still alive
            assert (await http.get(ready_url)).status_code == 503
            assert HEALTH.liveness()[0]
    finally:
        served.close()


DEMO = [sys.executable, "-m", "worker", "demo", "--events", "500", "--bad", "10", "--faults"]


@pytest.mark.integration
def test_every_metric_deploy_queries_is_registered_after_the_demo(tmp_path: Path) -> None:
    """The issue's acceptance: `demo --events 500 --bad 10 --faults --metrics-out FILE`."""
    out = tmp_path / "metrics.txt"
    done = subprocess.run(
        [*DEMO, "--metrics-out", str(out)],
        env=subprocess_env({}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    registered = registered_series(out.read_text())
    queried = {name for q in all_queries() for name in metric_names(q.expr)}
    assert queried and queried <= registered, queried - registered
    # The new gauges carry samples from the run, not only their HELP lines.
    samples = {s.name for f in text_string_to_metric_families(out.read_text()) for s in f.samples}
    for name in ("flyt_consumer_lag_records", "flyt_register_snapshot_age_seconds"):
        assert name in samples, name


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def registered_series(exposition: str) -> set[str]:
    """Series names a Prometheus exposition registers, sampled or not (HELP/TYPE lines)."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(exposition)
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


# --- logs ------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
    logs._HANDLER = None


def test_aiokafka_s_own_lines_are_json_like_the_worker_s(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("INFO", stream=stream, fmt="json")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("group chatter")  # quieted
    logging.getLogger("aiokafka.consumer.group_coordinator").warning("Heartbeat failed")
    logs.get("worker.engine").info("partitions_assigned", partitions=["p:0"])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "Heartbeat failed"
    assert first["logger"] == "aiokafka.consumer.group_coordinator"
    assert first["level"] == "warning"
    assert second["event"] == "partitions_assigned" and second["partitions"] == ["p:0"]
    assert "timestamp" in first and "timestamp" in second


def test_no_token_in_any_line_the_libraries_and_tracebacks_included(
    restore_logging: None,
) -> None:
    token = "tok-3f9a77c2e1d04b"
    logs.register_secret(token)
    stream = io.StringIO()
    logs.configure("DEBUG", stream=stream, fmt="json")
    logging.getLogger("aiokafka").warning("header was %s", token)
    try:
        raise RuntimeError(f"refused {token}")
    except RuntimeError:
        logging.getLogger("httpx").exception("crashed")
        logs.get().exception("post_batch_crashed", error=f"x {token}")
    text = stream.getvalue()
    assert text.count("***") >= 4 and token not in text
    assert "Traceback" in text  # the traceback is there, masked


def test_a_terminal_gets_lines_for_people_and_a_pipe_gets_json(restore_logging: None) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    logs.configure("INFO", stream=terminal)
    logs.get("worker.demo").info("progress", submitted=12, rejected=3)
    line = re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue()).strip()  # colours off
    assert "progress" in line and "submitted=12" in line and "rejected=3" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    pipe = io.StringIO()
    logs.configure("INFO", stream=pipe)
    logs.get("worker.demo").info("progress", submitted=12)
    assert json.loads(pipe.getvalue())["submitted"] == 12


def test_the_log_format_can_be_chosen_and_a_wrong_one_is_refused(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYT_LOG_FORMAT", "console")
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    logs.get().info("worker_running", bootstrap="b:9092")
    assert "bootstrap=b:9092" in stream.getvalue()
    with pytest.raises(ValueError, match=r"\(FLYT_LOG_FORMAT\) must be one of json, console"):
        logs.configure("INFO", fmt="xml")
