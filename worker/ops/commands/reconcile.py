"""`python -m worker reconcile`: the command around `worker/ops/reconcile.py`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import cast

import click
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.registry import Collector

from worker import logs, metrics
from worker.core.endpoints import UrlPolicy
from worker.ops.commands.options import (
    bootstrap_option,
    settings_for,
    topics_option,
    when,
    with_topics,
)
from worker.ops.errors import BrokerUnavailable, TopicMissing
from worker.ops.reconcile import (
    EXIT_UNFINISHED,
    Gathered,
    Progress,
    Report,
    gather,
    look_up,
    reconcile_findings,
    render,
    report_of,
)
from worker.ops.topic_reader import read_topics
from worker.xledger.client import ClientSettings, XledgerClient
from worker.xledger.secrets import SecretStore

EPILOG = """\b
Exit codes: 0 clean (every Betalt payment has one outcome, and what was posted is in
Xledger once, as submitted); 5 differences found; 1 could not finish (broker, topic, a
tenant whose Xledger could not be asked: the output says which); 2 bad usage."""


@click.command(epilog=EPILOG)
@bootstrap_option
@topics_option
@click.option("--tenant", help="Only this tenant.")
@click.option(
    "--since", metavar="WHEN", help="Betalt events that arrived at or after WHEN (30m, 7d, a date)."
)
@click.option("--until", metavar="WHEN", help="... and at or before WHEN (default: now).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve the run's result on /metrics on this port for --linger seconds after it "
    "(a CronJob has no scrape target otherwise).",
)
@click.option(
    "--linger",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to keep serving /metrics after the run (with --metrics-port).",
)
def reconcile(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenant: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
    metrics_port: int | None,
    linger: float,
) -> None:
    """For every Betalt payment of the period: its outcome on the topics and its vouchers
    in Xledger. Posted once as submitted; no outcome; a receipt but not in Xledger; in
    Xledger twice; account, amount, date or counter line differ; rejected or dead-lettered
    but in Xledger. Reads only: topics without joining a consumer group, Xledger through
    read-only lookups (paced as the worker paces, each tenant with its own token)."""
    s, server = settings_for(bootstrap)
    topics = with_topics(s, topic_overrides)
    start = when(since, "--since")
    end = when(until, "--until") or datetime.now(UTC)
    logs.configure("WARNING")  # the client's warnings as JSON lines on standard error
    logging.getLogger("kafka").setLevel(logging.ERROR)
    progress = Progress()
    try:
        policy = UrlPolicy(allow_sandbox=s.sandbox)
        client = XledgerClient(
            SecretStore(),
            policy=policy,
            endpoint_override=s.xledger_endpoint_override,
            # Give up on a tenant after the retries, not after half an hour of patience:
            # the run says which tenant it could not check.
            settings=ClientSettings(outage_patience_s=0.0),
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    wanted = [
        topics.payments,
        topics.registers,
        topics.submissions,
        topics.receipts,
        topics.rejections,
        topics.dlq,
    ]
    try:
        progress(f"reading {', '.join(wanted)}")
        records = read_topics(server, wanted, timeout_s=300.0)
    except (BrokerUnavailable, TopicMissing) as exc:
        _publish(None, EXIT_UNFINISHED, metrics_port, linger)
        raise click.ClickException(str(exc)) from None
    g = gather(records, topics, since=start, until=end, tenant=tenant)
    not_checked = asyncio.run(_look_up(client, g, progress))
    report = report_of(g, not_checked, start, end)
    click.echo(json.dumps(report.as_json(), ensure_ascii=False) if as_json else render(report))
    _publish(report, report.exit_code, metrics_port, linger)
    raise SystemExit(report.exit_code)


async def _look_up(client: XledgerClient, g: Gathered, progress: Progress) -> dict[str, str]:
    async with client:
        return await look_up(client, g, progress)


def _publish(report: Report | None, code: int, port: int | None, linger: float) -> None:
    """The run's result as gauges; served on `port` for `linger` seconds, alone (not the
    worker's metrics, which would read as a worker that is not ready)."""
    if report is not None:
        for tenant, findings in reconcile_findings(report).items():
            for finding, n in findings.items():
                metrics.RECONCILE_PAYMENTS.labels(tenant, finding).set(n)
    metrics.RECONCILE_EXIT_CODE.set(code)
    metrics.RECONCILE_LAST_RUN.set(time.time())
    if port is None or linger <= 0:
        return
    only_ours = cast(Collector, REGISTRY.restricted_registry(metrics.RECONCILE_METRICS))
    server, thread = start_http_server(port, registry=only_ours)
    try:
        time.sleep(linger)
    finally:
        server.shutdown()
        thread.join(5)
