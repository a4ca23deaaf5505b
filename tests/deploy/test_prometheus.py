"""The dashboards and alert rules against a real Prometheus (Debian's package) scraping a
real worker: `worker run --embedded`, the demo feed running, on a loopback port.

Every dashboard and alert expression must parse and evaluate in Prometheus' HTTP API;
the main panels must return data; every rule must be loaded and evaluated without error.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.queries import ALERTS, alert_queries, alert_rules, dashboards, panels
from tests.deploy.tools import prometheus_tool
from tests.processes import free_port, stop_process, subprocess_env
from tests.waiting import until_async
from worker.devenv.children import dies_with_parent

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]

# The panels that must show data for any worker that runs and posts (the others show
# trouble: dead letters, refusals, retries, which a healthy demo may not have).
MAIN_PANELS = {
    "flyt-xledger-overview.json": {
        "Events by outcome (per s)",
        "Betalt → receipt latency",
        "Consumer lag (records)",
        "Oldest unprocessed record (age)",
        "Workers ready and partitions held",
        "Rejections parked for re-evaluation (R16)",
        "Xledger payments by result (per s)",
        "Xledger requests by operation and result (per s)",
        "Xledger request latency",
        "Request economy",
        "Paused tenants",
        "Paused tenants by reason",
        "Register snapshot age",
    },
    "flyt-xledger-tenant.json": {
        "Paused",
        "Snapshot version in force",
        "Snapshot age",
        "Rejections parked (R16)",
        "Xledger payments by result (per s)",
        "Xledger requests by operation and result (per s)",
    },
}
RATE_INTERVAL = "30s"  # what Grafana would pick for $__rate_interval at a 1 s scrape


@contextmanager
def embedded_worker(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = (tmp_path / "worker.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--embedded", "--metrics-port", str(port)],
        env=subprocess_env({"FLYT_LOG_FORMAT": "json"}),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=dies_with_parent(),
    )
    try:
        yield port
    finally:
        stop_process(proc)
        log.close()


@contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    binary = prometheus_tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        "  - job_name: flyt-xledger-worker\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("ab")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=dies_with_parent(),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


async def instant(http: httpx.AsyncClient, api: str, expr: str) -> dict[str, Any]:
    """Prometheus' answer to an instant query: {"status": ..., "data"/"error": ...}."""
    return (await http.get(f"{api}/api/v1/query", params={"query": expr})).json()  # type: ignore[no-any-return]


def dashboard_exprs(tenant: str) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression) with Grafana's variables filled in."""
    return [
        (
            name,
            panel["title"],
            target["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$tenant", tenant),
        )
        for name, board in dashboards().items()
        for panel in panels(board)
        for target in panel["targets"]
    ]


async def test_dashboards_and_alerts_evaluate_in_prometheus_scraping_a_running_worker(
    tmp_path: Path,
) -> None:
    with embedded_worker(tmp_path) as metrics_port:
        async with httpx.AsyncClient(timeout=10) as http:

            async def worker_ready() -> bool:
                r = await http.get(f"http://127.0.0.1:{metrics_port}/ready")
                return r.status_code == 200

            await until_async(worker_ready, 120, "the embedded worker's /ready", interval_s=0.5)
            with prometheus(tmp_path, f"127.0.0.1:{metrics_port}") as api:

                async def scraped() -> bool:
                    answer = await instant(http, api, 'up{job="flyt-xledger-worker"} == 1')
                    return bool(answer.get("data", {}).get("result"))

                await until_async(scraped, 60, "Prometheus to scrape the worker", interval_s=0.5)

                # The tenant variable's values, as Grafana asks for them.
                labels = await http.get(
                    f"{api}/api/v1/label/tenant/values",
                    params={"match[]": "flyt_register_snapshot_version"},
                )
                tenants = labels.json()["data"]
                assert tenants, "the tenant variable has no values"

                async def posting_tenant() -> str | None:
                    top = 'topk(1, sum by (tenant) (xledger_payments_total{result="posted"}))'
                    result = (await instant(http, api, top))["data"]["result"]
                    return result[0]["metric"]["tenant"] if result else None

                tenant = await until_async(posting_tenant, 90, "a tenant with posted payments")
                assert tenant in tenants

                # Every expression parses and evaluates.
                exprs = dashboard_exprs(tenant)
                failures = []
                for name, title, expr in exprs:
                    answer = await instant(http, api, expr)
                    if answer["status"] != "success":
                        failures.append(f"{name}: {title}: {answer.get('error')}")
                for query in alert_queries():
                    answer = await instant(http, api, query.expr)
                    if answer["status"] != "success":
                        failures.append(f"{query.where}: {answer.get('error')}")
                assert not failures, failures

                # The main panels return data (once enough has been scraped for rates).
                main = [
                    (name, title, expr) for name, title, expr in exprs if title in MAIN_PANELS[name]
                ]
                assert {(n, t) for n, t, _ in main} == {
                    (n, t) for n, titles in MAIN_PANELS.items() for t in titles
                }
                empty: list[str] = []

                async def all_have_data() -> bool:
                    empty.clear()
                    for name, title, expr in main:
                        if not (await instant(http, api, expr))["data"]["result"]:
                            empty.append(f"{name}: {title}: {expr}")
                    return not empty

                try:
                    await until_async(all_have_data, 120, "data in every main panel", interval_s=2)
                except AssertionError:
                    raise AssertionError(f"main panels without data: {empty}") from None

                # Every rule is loaded from alerts.yml and evaluates without error.
                async def rules_evaluated() -> list[dict[str, Any]] | None:
                    groups = (await http.get(f"{api}/api/v1/rules")).json()["data"]["groups"]
                    rules = [r for g in groups for r in g["rules"]]
                    return rules if rules and all(r["health"] != "unknown" for r in rules) else None

                rules = await until_async(rules_evaluated, 60, "every rule to be evaluated")
                assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
                broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
                assert not broken, broken
