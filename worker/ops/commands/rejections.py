"""`python -m worker rejections list|resend`: rejected payments for finance staff. Reading
and planning: `worker/ops/rejections.py`; the resend runs the manual transfer
(`transfer.py`)."""

from __future__ import annotations

from typing import Any

import click

from worker import config
from worker.contracts import ProblemCode
from worker.kafka_clients import Bootstrap
from worker.ops import audit
from worker.ops import rejections as r
from worker.ops.commands.options import (
    bootstrap_option,
    settings_for,
    topics_option,
    when,
    with_topics,
)
from worker.ops.commands.output import EXIT_CODES, NothingFound, cell, echo_json, failures
from worker.ops.commands.transfer import Plan, Send, Transfer, actor_options, run_transfer
from worker.ops.snapshots_in_force import read_in_force
from worker.ops.topic_reader import read_topics
from worker.ops.when import age


@click.group(epilog=EXIT_CODES)
def rejections() -> None:
    """Rejected payments for finance staff (the Økonomi tab), and resending them.

    A rejected payment could not be posted for a reason finance staff can fix, usually a
    gap in the tenant's registers; it waits until a newer register snapshot fills the
    gap (R16) or someone with Økonomi resends it (R13).
    """


def _read_rejections(server: Bootstrap, t: config.Topics, payments: bool) -> dict[str, Any]:
    names = [t.rejections, t.receipts] + ([t.payments, t.registers] if payments else [])
    with failures():
        return read_topics(server, names)


@rejections.command("list", epilog=EXIT_CODES)
@bootstrap_option
@topics_option
@click.option("--tenant", help="Only this tenant.")
@click.option("--code", type=click.Choice([str(c) for c in ProblemCode]), help="Only this code.")
@click.option("--payment", "payments", multiple=True, help="Only this payment id; repeatable.")
@click.option(
    "--state",
    type=click.Choice(["waiting", "posted", "all"]),
    default="all",
    show_default=True,
    help="waiting: not posted yet; posted: posted since it was rejected.",
)
@click.option(
    "--since", metavar="WHEN", help="First rejected at or after WHEN (30m, 2h, 7d, a date)."
)
@click.option("--limit", type=click.IntRange(1), help="At most this many rows (newest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def rejections_list(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenant: str | None,
    code: str | None,
    payments: tuple[str, ...],
    state: str,
    since: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List rejected payments: tenant, code, the Norwegian message, since when, and
    whether each still waits or has been posted since."""
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides)
    got = _read_rejections(server, t, payments=False)
    book = r.read_rejections(got[t.rejections], got[t.receipts])
    chosen = book.select(
        tenant, code, list(payments), None if state == "all" else state, when(since, "--since")
    )[:limit]
    if not chosen:
        raise NothingFound(
            f"no rejected payment matches ({len(book.payments)} rejected payment(s) in "
            f"{t.rejections})"
        )
    if as_json:
        for p in chosen:
            echo_json(p.row())
        return
    click.echo(f"{'TENANT':<16} {'PAYMENT':<18} {'CODE':<24} {'SINCE':>8}  {'STATE':<8} MESSAGE")
    for p in chosen:
        more = len(p.latest.problems) - 1
        message = p.latest.problems[0].message + (f" (+{more} more)" if more else "")
        click.echo(
            f"{cell(p.tenant_id, 16):<16} {cell(p.payment_id, 18):<18} "
            f"{cell(p.latest.reason, 24):<24} {age(p.first_at):>8}  {p.state:<8} "
            f"{cell(message, 100)}"
        )
    waiting = sum(1 for p in chosen if p.state == "waiting")
    click.echo(
        f"{len(chosen)} rejected payment(s): {waiting} waiting, "
        f"{len(chosen) - waiting} posted since"
    )


@rejections.command("resend", epilog=EXIT_CODES)
@bootstrap_option
@topics_option
@click.option("--tenant", required=True, help="The tenant whose rejected payments to resend.")
@click.option("--payment", "payments", multiple=True, help="Only this payment id; repeatable.")
@click.option(
    "--code",
    type=click.Choice([str(c) for c in ProblemCode]),
    help="Only those rejected for this code.",
)
@click.option("--all-waiting", is_flag=True, help="Every waiting rejected payment of the tenant.")
@actor_options
@click.option(
    "--dry-run",
    is_flag=True,
    help="Say what would be resent and what the registers make of it; send nothing.",
)
@click.option("--yes", is_flag=True, help="Do not ask before sending.")
def rejections_resend(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenant: str,
    payments: tuple[str, ...],
    code: str | None,
    all_waiting: bool,
    actor: str,
    roles: tuple[str, ...],
    dry_run: bool,
    yes: bool,
) -> None:
    """Have the worker evaluate rejected payments again, against the tenant's snapshot
    in force.

    Each payment's original Betalt event is published again on the payment-status topic,
    marked with a header flyt.resend_by=ACTOR; the worker evaluates it as new and posts
    it or rejects it again with today's reasons. Payments already posted are skipped, and
    the worker never posts a payment twice (it looks it up in Xledger first), so running
    this again is harmless. Written to the audit topic and the log.
    """
    if not (payments or code or all_waiting):
        raise click.UsageError("choose what to resend: --payment ID, --code CODE or --all-waiting")
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides)
    resend = Transfer(audit.RESEND, s, server, t.audit, actor, list(roles), dry_run, yes)
    resend.authorize()
    got = _read_rejections(server, t, payments=True)
    book = r.read_rejections(got[t.rejections], got[t.receipts])
    chosen = book.select(tenant, code, list(payments), None if payments else "waiting")
    if not chosen:
        raise NothingFound(f"no rejected payment of {tenant} matches; nothing to resend")
    registers = read_in_force(got[t.registers]).book
    items = r.plan_resend(chosen, r.betalt_events(got[t.payments]), registers)
    to_send = [i for i in items if i.skip is None]
    version = registers.version(tenant)
    run_transfer(
        resend,
        Plan(
            heading=f"{len(to_send)} of {len(items)} payment(s) of {tenant} "
            f"{'would be' if dry_run else 'to be'} resent as {actor}; "
            f"snapshot in force: {'v' + str(version) if version else 'none'}",
            lines=[_resend_line(i) for i in items],
            sends=[
                Send(
                    (i.payment.tenant_id, i.payment.payment_id),
                    i.payment.payment_id,
                    r.resend_record(i.source, actor),
                )
                for i in to_send
                if i.source is not None
            ],
            audit_items=lambda sent: r.audit_items(items, sent),
            question=f"Resend {len(to_send)} payment(s)?",
            verb="resent",
            nothing_to_send="nothing to resend",
        ),
    )


def _resend_line(i: r.ResendItem) -> str:
    p = i.payment
    if i.skip is not None:
        return f"  {cell(p.payment_id, 18):<18} {p.latest.reason!s:<24} skipped: {i.skip}"
    codes = f": {', '.join(i.codes)}" if i.codes else ""
    return f"  {cell(p.payment_id, 18):<18} {p.latest.reason!s:<24} → expected: {i.expected}{codes}"
