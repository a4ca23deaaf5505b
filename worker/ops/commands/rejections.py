"""`python -m worker rejections list|resend`: rejected payments for finance staff. Reading
and planning: `worker/ops/rejections.py`; the resend runs the manual transfer
(`transfer.py`)."""

from __future__ import annotations

import click

from worker import config
from worker.contracts import ProblemCode
from worker.kafka_clients.connection import Bootstrap
from worker.ops import audit
from worker.ops import rejections as r
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
from worker.ops.commands.output import (
    EXIT_CODES,
    NothingFound,
    Table,
    cell,
    echo_json,
    failures,
)
from worker.ops.commands.transfer import Plan, Send, Transfer, actor_options, run_transfer
from worker.ops.progress import Progress
from worker.ops.snapshots_in_force import read_in_force
from worker.ops.topic_reader import Record, read_topics, scan
from worker.ops.when import Period, age


@click.group(epilog=EXIT_CODES)
def rejections() -> None:
    """Rejected payments for finance staff (the Økonomi tab), and resending them.

    A rejected payment could not be posted for a reason finance staff can fix, usually a
    gap in the tenant's registers; it waits until a newer register snapshot fills the
    gap (R16) or someone with Økonomi resends it (R13).
    """


def _book(
    server: Bootstrap,
    t: config.Topics,
    tenants: tuple[str, ...],
    window: Period,
    timeout_s: float,
    progress: Progress,
) -> r.RejectionBook:
    """The rejections of the period (of `tenants`, or all), kept; the receipts from the
    period's start on, streamed, to tell which were posted since."""
    wanted = set(tenants)

    def chosen(rec: Record) -> bool:
        return not wanted or (rec.json() or {}).get("tenant_id") in wanted

    with failures():
        kept = [
            rec
            for rec in scan(
                server, [t.rejections], period=window, timeout_s=timeout_s, progress=progress
            )
            if chosen(rec)
        ]
        if not kept:
            return r.read_rejections([], [])
        first = min(rec.at for rec in kept)
        receipts = scan(
            server, [t.receipts], period=Period(first), timeout_s=timeout_s, progress=progress
        )
        return r.read_rejections(kept, receipts)


@rejections.command("list", epilog=EXIT_CODES)
@bootstrap_option
@topics_option
@tenant_option
@click.option("--code", type=click.Choice([str(c) for c in ProblemCode]), help="Only this code.")
@click.option("--payment", "payments", multiple=True, help="Only this payment id; repeatable.")
@click.option(
    "--state",
    type=click.Choice(["waiting", "posted", "all"]),
    default="all",
    show_default=True,
    help="waiting: not posted yet; posted: posted since it was rejected.",
)
@period_options("Rejected")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(0),
    help="At most this many rows, newest first (0: every match).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@timeout_option
def rejections_list(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenants: tuple[str, ...],
    code: str | None,
    payments: tuple[str, ...],
    state: str,
    since: str | None,
    until: str | None,
    month: str | None,
    limit: int,
    as_json: bool,
    timeout_s: float,
) -> None:
    """List rejected payments: tenant, code, the Norwegian message, since when, and
    whether each still waits or has been posted since. With a period, only the
    rejections of that period are read (and the receipts from its start on)."""
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides)
    window = period(since, until, month)
    progress = Progress("rejections list")
    book = _book(server, t, tenants, window, timeout_s, progress)
    matches = [
        p
        for p in book.select(None, code, list(payments), None if state == "all" else state)
        if not tenants or p.tenant_id in tenants
    ]
    chosen = matches[:limit] if limit else matches
    if not chosen:
        raise NothingFound(
            f"no rejected payment matches ({len(book.payments)} rejected payment(s) read from "
            f"{t.rejections}, {window.describe()})"
        )
    if as_json:
        for p in chosen:
            echo_json(p.row())
        return
    table = Table(
        [
            ("TENANT", 16, "<"),
            ("PAYMENT", 18, "<"),
            ("CODE", 24, "<"),
            ("SINCE", 8, ">"),
            ("STATE", 8, "<"),
            ("MESSAGE", 0, "<"),
        ]
    )
    click.echo(table.header())
    for p in chosen:
        more = len(p.latest.problems) - 1
        message = p.latest.problems[0].message + (f" (+{more} more)" if more else "")
        click.echo(
            table.row(p.tenant_id, p.payment_id, p.latest.reason, age(p.first_at), p.state, message)
        )
    waiting = sum(1 for p in chosen if p.state == "waiting")
    rest = "; --limit 0 for all" if len(matches) > len(chosen) else ""
    click.echo(
        f"{len(chosen)} of {len(matches)} rejected payment(s): {waiting} waiting, "
        f"{len(chosen) - waiting} posted since{rest}"
    )


@rejections.command("resend", epilog=EXIT_CODES)
@bootstrap_option
@topics_option
@click.option(
    "--tenant",
    "tenants",
    multiple=True,
    required=True,
    metavar="T",
    help="The tenant whose rejected payments to resend; repeatable.",
)
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
@timeout_option
def rejections_resend(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenants: tuple[str, ...],
    payments: tuple[str, ...],
    code: str | None,
    all_waiting: bool,
    actor: str,
    roles: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    timeout_s: float,
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
    progress = Progress("rejections resend")
    book = _book(server, t, tenants, Period(), timeout_s, progress)
    chosen = [
        p
        for p in book.select(None, code, list(payments), None if payments else "waiting")
        if p.tenant_id in tenants
    ]
    names = ", ".join(tenants)
    if not chosen:
        raise NothingFound(f"no rejected payment of {names} matches; nothing to resend")
    with failures():
        registers = read_in_force(
            read_topics(server, [t.registers], timeout_s=timeout_s)[t.registers]
        ).book
        events = r.events_of(server, t.payments, chosen, timeout_s=timeout_s, progress=progress)
    items = r.plan_resend(chosen, events, registers)
    to_send = [i for i in items if i.skip is None]
    versions = ", ".join(
        f"{tenant} {'v' + str(v) if (v := registers.version(tenant)) else 'none'}"
        for tenant in tenants
    )
    run_transfer(
        resend,
        Plan(
            heading=f"{len(to_send)} of {len(items)} payment(s) of {names} "
            f"{'would be' if dry_run else 'to be'} resent as {actor}; "
            f"snapshot in force: {versions}",
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
