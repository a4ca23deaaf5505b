"""Observability of the running worker on a real broker: ready, and its lag, parked and
snapshot-age gauges; the demo's metrics against what deploy/ queries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.brokers import Broker
from tests.deploy.queries import all_queries, metric_names
from tests.factories import snapshot_dict
from tests.processes import subprocess_env
from tests.stream_helpers import prepare, scrape, unique_settings
from tests.waiting import until_async
from worker.build import build
from worker.health import HEALTH, serve
from worker.runtime import make_client, running_pipeline


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

                await until_async(ready, 90, "/ready to answer 200")
                assert "input partitions assigned" in (await http.get(ready_url)).text

                async def gauges() -> bool:
                    samples = await scrape(served.port)
                    return any(
                        name == "flyt_consumer_lag_records" and ("topic", s.topics.payments) in lbls
                        for name, lbls in samples
                    )

                await until_async(gauges, 30, "the lag gauges of the worker's topics")
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
