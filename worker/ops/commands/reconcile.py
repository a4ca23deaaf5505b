"""`python -m worker reconcile`: the command around `worker/ops/reconcile.py`."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import click
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.registry import Collector

from worker import logs, metrics
from worker.core.endpoints import UrlPolicy
from worker.ops.commands.options import (
    bootstrap_option,
    period,
    period_options,
    settings_for,
    tenant_option,
    timeout_option,
    topics_option,
    with_topics,
)
from worker.ops.errors import BrokerUnavailable, TopicMissing
from worker.ops.progress import Progress
from worker.ops.reconcile import (
    EXIT_UNFINISHED,
    OUTCOME_SLACK,
    Gathered,
    Report,
    gather,
    look_up,
    reconcile_findings,
    render,
    report_of,
)
from worker.ops.topic_reader import ReadStats, Record, read_topics, scan
from worker.ops.when import Period
from worker.xledger.client import ClientSettings, XledgerClient
from worker.xledger.secrets import SecretStore

EPILOG = """\b
Exit codes: 0 clean (every Betalt payment of the period has one outcome, and what was
posted is in Xledger once, as submitted, every field); 5 differences found; 6 incomplete
(the topics no longer hold all of the period: retention; the output says what is
missing); 1 could not finish (broker, topic, a tenant whose Xledger could not be asked:
the output says which); 2 bad usage."""

CSV_COLUMNS = ("tenant_id", "payment_id", "outcome", "finding", "findings", "details")


@click.command(epilog=EPILOG)
@bootstrap_option
@topics_option
@tenant_option
@period_options("Betalt events that arrived")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write every payment's verdict to this CSV file (for finance staff: "
    "semicolon-separated, UTF-8 with BOM, as a Norwegian spreadsheet opens it).",
)
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
@timeout_option
def reconcile(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenants: tuple[str, ...],
    since: str | None,
    until: str | None,
    month: str | None,
    as_json: bool,
    csv_path: Path | None,
    metrics_port: int | None,
    linger: float,
    timeout_s: float,
) -> None:
    """For every Betalt payment of the period: its outcome on the topics and its vouchers
    in Xledger, looked up where and with the token it was posted with (its receipt's),
    else the snapshot in force. Posted once as submitted (account, amount, date,
    currency, text, taxRule, glObject1–5, project, bankAccountRef); no outcome; a receipt
    but not in Xledger; in Xledger twice; a field differs; rejected or dead-lettered but
    in Xledger. Reads only: topics without joining a consumer group, Xledger through
    read-only lookups (paced as the worker paces, each token its own). Dates are Oslo
    days; --month 2026-11 (or previous) takes an Oslo month."""
    s, server = settings_for(bootstrap)
    topics = with_topics(s, topic_overrides)
    window = period(since, until, month)
    end = window.end or datetime.now(UTC)
    window = Period(window.start, end)
    logs.configure("WARNING")  # the client's warnings as JSON lines on standard error
    logging.getLogger("kafka").setLevel(logging.ERROR)
    progress = Progress("reconcile")
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
    outcomes = Period(window.start - OUTCOME_SLACK if window.start else None, None)
    stats = ReadStats()

    def stream(topic: str, within: Period) -> Iterator[Record]:
        return scan(
            server, [topic], period=within, timeout_s=timeout_s, progress=progress, stats=stats
        )

    try:
        registers = read_topics(server, [topics.registers], timeout_s=timeout_s)
        records = {
            topics.registers: registers[topics.registers],
            topics.payments: stream(topics.payments, window),
            topics.receipts: stream(topics.receipts, outcomes),
            topics.rejections: stream(topics.rejections, outcomes),
            topics.dlq: stream(topics.dlq, outcomes),
            topics.submissions: stream(topics.submissions, outcomes),
        }
        g = gather(records, topics, period=window, tenants=tenants)
    except (BrokerUnavailable, TopicMissing) as exc:
        _publish(None, EXIT_UNFINISHED, metrics_port, linger)
        raise click.ClickException(str(exc)) from None
    if window.start is not None:
        g.missing = [gap.describe() for gap in stats.gaps]
    progress(stats.describe())
    not_checked = asyncio.run(_look_up(client, g, progress))
    report = report_of(g, not_checked, window.start, end)
    click.echo(json.dumps(report.as_json(), ensure_ascii=False) if as_json else render(report))
    if csv_path is not None:
        _write_csv(report, csv_path)
    _publish(report, report.exit_code, metrics_port, linger)
    raise SystemExit(report.exit_code)


def _write_csv(report: Report, path: Path) -> None:
    """Every payment of the period, its outcome and verdict: one row each."""
    try:
        with path.open("w", encoding="utf-8-sig", newline="") as f:
            out = csv.writer(f, delimiter=";")
            out.writerow(CSV_COLUMNS)
            for key, v in sorted(report.verdict.payments.items()):
                out.writerow(
                    [
                        key[0],
                        key[1],
                        v.outcome,
                        str(v.finding),
                        ", ".join(str(x) for x in v.findings),
                        "; ".join(v.details),
                    ]
                )
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None


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
