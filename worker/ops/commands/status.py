"""`python -m worker status`: per tenant, what the people on call ask first. Gathered by
`worker/ops/tenant_status.py`."""

from __future__ import annotations

import click

from worker.ops.commands.options import bootstrap_option, settings_for, topics_option, with_topics
from worker.ops.commands.output import EXIT_CODES, NothingFound, echo_json, failures
from worker.ops.dead_letter_queue import DeadLetter
from worker.ops.rejections import read_rejections
from worker.ops.safe_text import escape
from worker.ops.snapshots_in_force import read_in_force
from worker.ops.tenant_status import MetricsUnavailable, paused_from_metrics, statuses
from worker.ops.topic_reader import read_topics


@click.command(epilog=EXIT_CODES)
@bootstrap_option
@topics_option
@click.option("--tenant", help="Only this tenant.")
@click.option(
    "--metrics",
    "metrics_url",
    metavar="URL",
    help="A worker's metrics address (http://HOST:9108/metrics): whether a tenant is "
    "paused is known only to the worker; without it the status shows the evidence on the topics.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per tenant.")
def status(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenant: str | None,
    metrics_url: str | None,
    as_json: bool,
) -> None:
    """Per tenant: the register snapshot in force (version, age, who published it),
    snapshots refused since, whether posting is paused and why, rejections waiting,
    dead letters, and the last receipt."""
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides)
    paused = None
    if metrics_url:
        try:
            paused = paused_from_metrics(metrics_url)
        except MetricsUnavailable as exc:
            raise click.ClickException(str(exc)) from None
    with failures():
        got = read_topics(server, [t.registers, t.rejections, t.receipts, t.dlq])
    found = statuses(
        read_in_force(got[t.registers]),
        read_rejections(got[t.rejections], got[t.receipts]),
        [DeadLetter(r) for r in got[t.dlq]],
        got[t.receipts],
        paused,
    )
    found = [x for x in found if tenant is None or x.tenant_id == tenant]
    if not found:
        raise NothingFound(
            f"no tenant {tenant} on the topics" if tenant else "no tenant on the topics"
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
        for r in x.refused_since:
            click.echo(
                f"  refused   v{r['version']} at {r['at']}: {escape('; '.join(r['reasons']))[:200]}"
            )
        click.echo(f"  paused    {x.paused}: {x.paused_why}")
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
