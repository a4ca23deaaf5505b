"""`python -m worker whatif`: what a register change would do, before it is published.
The judging: `worker/ops/whatif.py`; here the options and the printing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from worker.core.endpoints import UrlPolicy
from worker.offline import SnapshotFileError, read_snapshot_file
from worker.ops.commands.options import (
    bootstrap_option,
    settings_for,
    timeout_option,
    topics_option,
    with_topics,
)
from worker.ops.commands.output import EXIT_CODES, RefusedExit, cell, echo_json, failures
from worker.ops.progress import Progress
from worker.ops.rejections import events_of, newest_betalt, read_rejections
from worker.ops.safe_text import escape
from worker.ops.snapshots_in_force import read_in_force
from worker.ops.topic_reader import Record, read_topics, scan
from worker.ops.whatif import Outcome, WhatIf, what_if
from worker.ops.when import Period


@click.command(epilog=EXIT_CODES)
@click.option(
    "--snapshot",
    "draft_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The draft RegisterSnapshot JSON file (one snapshot, or a list: one per tenant).",
)
@bootstrap_option
@topics_option
@click.option(
    "--recent",
    default=200,
    show_default=True,
    type=click.IntRange(0),
    help="How many of the tenant's newest Betalt payments to evaluate, besides its "
    "waiting rejections.",
)
@click.option(
    "--show", default=20, show_default=True, type=click.IntRange(0), help="Rows shown per list."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per draft.")
@timeout_option
def whatif(
    draft_path: Path,
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    recent: int,
    show: int,
    as_json: bool,
    timeout_s: float,
) -> None:
    """What would this register change do? Before publishing a draft snapshot: which of
    the tenant's waiting rejections would now post, which would still fail and why, and
    which of its recent payments would get a different accounting string (or start to
    fail). The draft is judged as the worker would (R1–R13). Nothing is published.
    Exit 4 when the worker would refuse the draft."""
    try:
        drafts, notes = read_snapshot_file(draft_path)
    except SnapshotFileError as exc:
        raise click.ClickException(str(exc)) from None
    if notes:
        for note in notes:
            click.echo(note, err=True)
        raise click.ClickException(f"{draft_path} holds a snapshot that is not a RegisterSnapshot")
    if not drafts:
        raise click.ClickException(f"{draft_path} holds no snapshot")
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides)
    tenants = {d.tenant_id for _, d in drafts}
    progress = Progress("whatif")

    def theirs(r: Record) -> bool:
        return (r.json() or {}).get("tenant_id") in tenants

    with failures():
        registers = read_topics(server, [t.registers], timeout_s=timeout_s)[t.registers]
        rejected = [
            r
            for r in scan(server, [t.rejections], timeout_s=timeout_s, progress=progress)
            if theirs(r)
        ]
        first = min((r.at for r in rejected), default=None)
        receipts = scan(
            server, [t.receipts], period=Period(first), timeout_s=timeout_s, progress=progress
        )
        book = read_rejections(rejected, receipts if first is not None else [])
        waiting = [p for tenant in sorted(tenants) for p in book.waiting(tenant)]
        events = events_of(server, t.payments, waiting, timeout_s=timeout_s, progress=progress)
        newest = newest_betalt(
            server,
            t.payments,
            tenants,
            recent + len(waiting),
            timeout_s=timeout_s,
            progress=progress,
        )
    for pairs in newest.values():
        for record, event in pairs:
            events.setdefault((event.tenant_id, event.payment_id), []).append((record, event))
    history = read_in_force(registers)
    refused = 0
    for _, draft in drafts:
        report = what_if(
            draft,
            history.book.index(draft.tenant_id),
            book.waiting(draft.tenant_id),
            events,
            recent,
            UrlPolicy(allow_sandbox=s.sandbox),
        )
        refused += not report.accepted
        if as_json:
            echo_json(report.to_json())
        else:
            _print_whatif(report, show)
    if not as_json:
        click.echo("Nothing was published.")
    if refused:
        raise RefusedExit(f"the worker would refuse {refused} draft(s): see the reasons above")


def _accounting(o: dict[str, Any]) -> str:
    if o["outcome"] == "posts":
        return " ".join(f"{k}={v}" for k, v in o["accounting"].items())
    return "; ".join(f"{p['code']}: {p['message']}" for p in o["problems"])


def _print_whatif(r: WhatIf, show: int) -> None:
    now = f"v{r.in_force_version}" if r.in_force_version else "none"
    click.echo(f"Draft {escape(r.tenant_id)} v{r.draft_version} (in force: {now})")
    if r.accepted:
        click.echo("  the worker would accept it")
    else:
        click.echo("  the worker would REFUSE it, and keep the snapshot in force:")
        for reason in r.refusals:
            click.echo(f"    {escape(reason)}")
    if not r.evaluated:
        click.echo("  not evaluated: fix the registers first")
        return

    def rows(title: str, outcomes: list[Outcome], fmt: Callable[[Outcome], str]) -> None:
        click.echo(f"  {title} ({len(outcomes)})")
        for o in outcomes[:show]:
            click.echo(f"    {cell(o.payment_id, 18):<18} {fmt(o)}")
        if len(outcomes) > show:
            click.echo(f"    … and {len(outcomes) - show} more (--show N, or --json)")

    def diff(o: Outcome) -> str:
        if o.before["outcome"] != "posts" or o.after["outcome"] != "posts":
            return escape(_accounting(o.after))
        before, after = o.before["accounting"], o.after["accounting"]
        keys = sorted(set(before) | set(after))
        changed = ", ".join(
            f"{k} {before.get(k, '-')} → {after.get(k, '-')}"
            for k in keys
            if before.get(k) != after.get(k)
        )
        return changed or f"unchanged: {_accounting(o.after)}"

    waiting = (
        len(r.would_post)
        + len(r.still_failing)
        + len(r.waiting_without_event)
        + len(r.xledger_refused)
    )
    click.echo(f"Waiting rejections: {waiting}")
    rows(
        "would now post",
        r.would_post,
        lambda o: f"{cell(_accounting(o.before), 50)} → {_accounting(o.after)}",
    )
    rows("would still fail", r.still_failing, lambda o: escape(_accounting(o.after)))
    if r.xledger_refused:
        rows(
            "refused by Xledger: sent again when the draft is published (R16); "
            "with the same string Xledger will likely refuse again",
            r.xledger_refused,
            diff,
        )
    if r.waiting_without_event:
        click.echo(f"  Betalt event no longer on the topic: {', '.join(r.waiting_without_event)}")
    click.echo(f"Recent payments: {r.recent} evaluated, {r.unchanged} unchanged")

    rows("accounting string would change", r.changed, diff)
    rows("would start to fail", r.newly_failing, lambda o: escape(_accounting(o.after)))
    rows(
        "would now post (failed under the snapshot in force)",
        r.newly_posting,
        lambda o: _accounting(o.after),
    )
