"""`python -m worker status`: per tenant, what the people on call ask first, for the whole
group of workers. Gathered by `worker/ops/tenant_status.py`."""

from __future__ import annotations

from collections.abc import Iterator

import click

from worker.ops.commands.options import (
    bootstrap_option,
    period,
    settings_for,
    tenant_option,
    timeout_option,
    topics_option,
    with_topics,
)
from worker.ops.commands.output import EXIT_CODES, NothingFound, echo_json, failures
from worker.ops.dead_letter_queue import DeadLetter
from worker.ops.progress import Progress
from worker.ops.rejections import RejectionBook, read_rejections
from worker.ops.safe_text import escape
from worker.ops.snapshots_in_force import read_in_force
from worker.ops.tenant_control import read_states
from worker.ops.tenant_status import (
    GroupReading,
    MetricsUnavailable,
    group_paused,
    statuses,
    summarize_letters,
)
from worker.ops.topic_reader import ReadStats, Record, read_topics, scan


@click.command(epilog=EXIT_CODES)
@bootstrap_option
@topics_option
@tenant_option
@click.option(
    "--metrics",
    "metrics_urls",
    multiple=True,
    metavar="URL",
    help="A worker replica's metrics address (http://HOST:9108/metrics); repeatable, one "
    "per replica: a tenant paused on any of them is paused. Pauses for credits or a refused "
    "token live in the workers' memory; without this (or --prometheus) the status shows the "
    "evidence on the topics.",
)
@click.option(
    "--prometheus",
    "prometheus_url",
    metavar="URL",
    help="Prometheus (http://prometheus:9090): the whole group's pauses, by the dashboards' "
    "own query, instead of each replica's --metrics.",
)
@click.option(
    "--since",
    metavar="WHEN",
    help="Read rejections, dead letters and receipts from WHEN on (30m, 7d, an Oslo date); "
    "default: all the topics hold.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per tenant.")
@timeout_option
def status(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenants: tuple[str, ...],
    metrics_urls: tuple[str, ...],
    prometheus_url: str | None,
    since: str | None,
    as_json: bool,
    timeout_s: float,
) -> None:
    """Per tenant: the register snapshot in force (version, age, who published it),
    snapshots refused since, whether posting is paused (by hand: who, when, why; or for
    credits or a token, on which replica), rejections waiting, dead letters, and the last
    receipt."""
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides)
    window = period(since, None, None)
    group: GroupReading | None = None
    if metrics_urls or prometheus_url:
        try:
            group = group_paused(list(metrics_urls), prometheus_url)
        except MetricsUnavailable as exc:
            raise click.ClickException(str(exc)) from None
        for source, why in group.unreadable.items():
            click.echo(f"status: {source} could not be read: {why}", err=True)
    progress, stats = Progress("status"), ReadStats()
    wanted = set(tenants)

    def chosen(r: Record) -> bool:
        tenant = (r.json() or {}).get("tenant_id")
        return not wanted or tenant in wanted

    def stream(topic: str) -> Iterator[Record]:
        return scan(
            server, [topic], period=window, timeout_s=timeout_s, progress=progress, stats=stats
        )

    with failures():
        registers = read_topics(server, [t.registers], timeout_s=timeout_s)[t.registers]
        by_hand = read_states(server, t.control, timeout_s)
        kept = [r for r in stream(t.rejections) if chosen(r)]
        book: RejectionBook = read_rejections(kept, [])
        last: dict[str, Record] = {}
        for r in stream(t.receipts):
            book.note_receipt(r)
            tenant = (r.json() or {}).get("tenant_id")
            newer = tenant not in last or r.timestamp_ms >= last[tenant].timestamp_ms
            if isinstance(tenant, str) and (not wanted or tenant in wanted) and newer:
                last[tenant] = r
        letters = summarize_letters(DeadLetter(r) for r in stream(t.dlq))
    if progress.elapsed_s > 2:
        progress.say(stats.describe())
    found = statuses(read_in_force(registers), book, letters, last, group, by_hand)
    found = [x for x in found if not wanted or x.tenant_id in wanted]
    if not found:
        raise NothingFound(
            f"no tenant {', '.join(tenants)} on the topics"
            if tenants
            else "no tenant on the topics"
        )
    for x in found:
        if as_json:
            echo_json(x.to_json())
            continue
        click.echo(escape(x.tenant_id))
        snap = x.snapshot
        if snap:
            roles = ", ".join(snap["roles"]) or "no roles"
            click.echo(
                f"  snapshot  v{snap['version']}, published {snap['published_at']} "
                f"({snap['age']} ago) by {escape(snap['published_by'])} ({escape(roles)})"
            )
        else:
            click.echo("  snapshot  none in force: every payment is rejected UNKNOWN_TENANT")
        for refused in x.refused_since:
            words = escape("; ".join(refused["reasons"]))[:200]
            click.echo(f"  refused   v{refused['version']} at {refused['at']}: {words}")
        click.echo(f"  paused    {x.paused}: {escape(x.paused_why)}")
        codes = ", ".join(f"{k} {v}" for k, v in x.waiting_by_code.items())
        click.echo(f"  waiting   {x.waiting} rejected payment(s){': ' + codes if codes else ''}")
        reasons = ", ".join(f"{k} {v}" for k, v in x.dead_letters_by_reason.items())
        click.echo(f"  DLQ       {x.dead_letters} record(s){': ' + reasons if reasons else ''}")
        rc = x.last_receipt
        if rc:
            click.echo(
                f"  receipt   {escape(str(rc['payment_id']))} posted {rc['posted_at']} "
                f"({rc['age']} ago)"
            )
        else:
            click.echo("  receipt   none yet")
