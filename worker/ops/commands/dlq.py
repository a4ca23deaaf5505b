"""`python -m worker dlq list|show|stats|replay`: the dead-letter queue for the people on
call. Reading and choosing: `worker/ops/dead_letter_queue.py`; the replay runs the
manual transfer (`transfer.py`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from worker.contracts import DlqReason
from worker.ops import audit
from worker.ops import dead_letter_queue as q
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
from worker.ops.safe_text import escape, safe_bytes
from worker.ops.topic_reader import ReadStats
from worker.ops.when import age

F = TypeVar("F", bound=Callable[..., Any])


@click.group(epilog=EXIT_CODES)
def dlq() -> None:
    """Inspect and replay the dead-letter queue (xledger.dlq.v1, or FLYT_TOPIC_DLQ).

    A dead letter is an event or submission the worker could not read, or could not post
    after its retries; it carries the original bytes and the reason in dlq.* headers.
    A position P@O is a DLQ partition and offset, as `dlq list` shows it.
    """


def _dlq_filter_options(f: F) -> F:
    for decorator in reversed(
        [
            tenant_option,
            click.option("--payment", help="Only this payment id (read from the value)."),
            click.option(
                "--reason",
                type=click.Choice([str(r) for r in DlqReason]),
                help="Only this reason (the dlq.reason header).",
            ),
            click.option(
                "--stage",
                type=click.Choice(["enrich", "post", "replay"]),
                help="Only records that failed in this stage.",
            ),
            period_options("Dead-lettered"),
        ]
    ):
        f = decorator(f)
    return f


def _dlq_filter(
    tenants: tuple[str, ...],
    payment: str | None,
    reason: str | None,
    stage: str | None,
    since: str | None,
    until: str | None,
    month: str | None,
) -> q.DlqFilter:
    return q.DlqFilter(tenants, payment, reason, stage, period(since, until, month))


def _read_said(progress: Progress, stats: ReadStats) -> None:
    """What the read cost, on standard error: at production size that is worth knowing."""
    progress.say(stats.describe())


LIST_LIMIT = 100


@dlq.command("list", epilog=EXIT_CODES)
@bootstrap_option
@topics_option
@_dlq_filter_options
@click.option(
    "--limit",
    default=LIST_LIMIT,
    show_default=True,
    type=click.IntRange(0),
    help="At most this many rows, newest first (0: every match).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
@timeout_option
def dlq_list(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenants: tuple[str, ...],
    payment: str | None,
    reason: str | None,
    stage: str | None,
    since: str | None,
    until: str | None,
    month: str | None,
    limit: int,
    as_json: bool,
    timeout_s: float,
) -> None:
    """List dead letters, newest first: where, how old, whose, why, how often replayed.

    With --since/--until/--month only that period's records are fetched; the DLQ is
    streamed and only the rows shown are kept."""
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides, bare="dlq")
    f = _dlq_filter(tenants, payment, reason, stage, since, until, month)
    progress, stats = Progress("dlq list"), ReadStats()
    with failures():
        chosen = q.select(
            server, t.dlq, f, limit or None, timeout_s=timeout_s, progress=progress, stats=stats
        )
        trail = q.trail(server, t.audit)
    _read_said(progress, stats)
    if not chosen.letters:
        raise NothingFound(
            f"no dead letter in {t.dlq} matches ({chosen.read} record(s) read, "
            f"{f.period.describe()})"
        )
    inv = q.Inventory(chosen.letters, trail)
    now = datetime.now(UTC)
    rows = [d.row(now, inv.replays(d)) for d in chosen.letters]
    if as_json:
        for row in rows:
            echo_json(row)
        return
    table = Table(
        [
            ("POSITION", 10, "<"),
            ("AGE", 7, ">"),
            ("TENANT", 16, "<"),
            ("PAYMENT", 20, "<"),
            ("STAGE", 6, "<"),
            ("REASON", 20, "<"),
            ("REPLAYS", 7, ">"),
            ("MESSAGE", 0, "<"),
        ]
    )
    click.echo(table.header())
    for r in rows:
        click.echo(
            table.row(
                r["position"],
                r["age"],
                r["tenant_id"],
                r["payment_id"],
                r["stage"],
                r["reason"],
                r["replay_count"],
                r["message"],
            )
        )
    more = "; --limit 0 for all" if chosen.matched > len(rows) else ""
    click.echo(f"{len(rows)} of {chosen.matched} matching dead letter(s) in {t.dlq}{more}")


@dlq.command("show", epilog=EXIT_CODES)
@click.argument("position", metavar="P@O")
@bootstrap_option
@topics_option
@click.option("--json", "as_json", is_flag=True, help="The record as one JSON object.")
@timeout_option
def dlq_show(
    bootstrap: str | None,
    position: str,
    topic_overrides: tuple[str, ...],
    as_json: bool,
    timeout_s: float,
) -> None:
    """Show one dead letter whole: its headers, key and value (read where it is).

    A value that parses as JSON is pretty-printed; one that does not is shown escaped
    (control characters and undecodable bytes as \\xNN) and cut with its full length.
    """
    try:
        where = q.parse_position(position)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="P@O") from None
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides, bare="dlq")
    with failures():
        found, missing = q.at(server, t.dlq, [where], timeout_s)
        trail = q.trail(server, t.audit)
    if missing:
        raise NothingFound(f"no dead letter at {position} in {t.dlq}")
    d = found[0]
    inv = q.Inventory(found, trail)
    r = d.record
    body = d.body
    if as_json:
        echo_json(
            {
                "topic": r.topic,
                "position": d.position,
                "dead_lettered_at": r.at.isoformat(),
                "key": safe_bytes(r.key, 10_000) if r.key is not None else None,
                "headers": [[k, safe_bytes(v, 10_000)] for k, v in r.headers],
                "value_bytes": len(r.value or b""),
                "value": body if body is not None else safe_bytes(r.value, 10_000),
                "value_parses": body is not None,
                "replay_count": inv.replays(d),
            }
        )
        return
    click.echo(f"{r.topic} {d.position}, dead-lettered {r.at.isoformat()} ({age(r.at)} ago)")
    click.echo(f"key: {safe_bytes(r.key, 500)}")
    click.echo(f"headers ({len(r.headers)}):")
    for k, v in r.headers:
        click.echo(f"  {escape(k)}: {safe_bytes(v, 500)}")
    click.echo(f"replays so far: {inv.replays(d)}")
    size = len(r.value or b"")
    if body is not None:
        click.echo(f"value ({size} bytes, JSON):")
        pretty = json.dumps(body, ensure_ascii=False, indent=2)
        for line in pretty.splitlines():
            click.echo("  " + escape(line, backslashes=False))
    else:
        click.echo(f"value ({size} bytes, not a JSON object; shown escaped):")
        click.echo("  " + safe_bytes(r.value, 2000))


@dlq.command("stats", epilog=EXIT_CODES)
@bootstrap_option
@topics_option
@_dlq_filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@timeout_option
def dlq_stats(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenants: tuple[str, ...],
    payment: str | None,
    reason: str | None,
    stage: str | None,
    since: str | None,
    until: str | None,
    month: str | None,
    as_json: bool,
    timeout_s: float,
) -> None:
    """Count dead letters by reason, tenant and stage; the oldest and the newest. The DLQ
    is streamed: counts are kept, records are not."""
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides, bare="dlq")
    f = _dlq_filter(tenants, payment, reason, stage, since, until, month)
    progress, stats = Progress("dlq stats"), ReadStats()
    with failures():
        tally = q.tally(server, t.dlq, f, timeout_s=timeout_s, progress=progress, stats=stats)
    _read_said(progress, stats)
    st = tally.to_json()
    if as_json:
        echo_json({"topic": t.dlq, **st})
    else:
        click.echo(f"{st['total']} dead letter(s) in {t.dlq}")
        for name in ("by_reason", "by_tenant", "by_stage"):
            counts = ", ".join(f"{escape(k)} {v}" for k, v in st[name].items()) or "-"
            click.echo(f"  {name.replace('_', ' ') + ':':<11} {counts}")
        for end in ("oldest", "newest"):
            e = st[end]
            if e:
                at = datetime.fromisoformat(e["at"])
                click.echo(
                    f"  {end + ':':<11} {e['position']} {e['at']} ({age(at)} ago, {e['reason']})"
                )
    if not st["total"]:
        raise NothingFound(f"no dead letter in {t.dlq} matches")


@dlq.command("replay", epilog=EXIT_CODES)
@bootstrap_option
@topics_option
@click.option(
    "--at",
    "positions",
    multiple=True,
    metavar="P@O",
    help="Replay the dead letter at this position (as `dlq list` shows it); repeatable.",
)
@_dlq_filter_options
@click.option(
    "--all", "replay_all", is_flag=True, help="Every dead letter (with the filters: every match)."
)
@actor_options
@click.option("--dry-run", is_flag=True, help="Say exactly what would be sent; send nothing.")
@click.option("--yes", is_flag=True, help="Do not ask before sending.")
@timeout_option
def dlq_replay(
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    positions: tuple[str, ...],
    tenants: tuple[str, ...],
    payment: str | None,
    reason: str | None,
    stage: str | None,
    since: str | None,
    until: str | None,
    month: str | None,
    replay_all: bool,
    actor: str,
    roles: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    timeout_s: float,
) -> None:
    """Send dead letters back to the topic they came from, to be processed again.

    Choose them with --at, with the filters, or with --all. The original key, value and
    headers go back byte for byte, with dlq.replay_count and dlq.replayed_by set. A
    record replayed FLYT_DLQ_MAX_REPLAYS times (3) is refused: find out why it fails.
    A payment that had in fact been posted is not posted again (the worker looks it up
    in Xledger first). Every replay, and every refused one, is written to the audit
    topic and the log; a dry run writes nothing.
    """
    filters = (payment, reason, stage, since, until, month)
    filtered = bool(tenants) or any(v is not None for v in filters)
    if positions and (replay_all or filtered):
        raise click.UsageError("give either --at positions, or --all and/or filters, not both")
    if not positions and not replay_all and not filtered:
        raise click.UsageError("choose what to replay: --at P@O, filters (--tenant …) or --all")
    try:
        wanted = [q.parse_position(p) for p in positions]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    f = _dlq_filter(tenants, *filters)
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides, bare="dlq")
    replay = Transfer(audit.REPLAY, s, server, t.audit, actor, list(roles), dry_run, yes)
    replay.authorize()
    progress, stats = Progress("dlq replay"), ReadStats()
    with failures():
        if wanted:
            letters, missing = q.at(server, t.dlq, wanted, timeout_s)
            if missing:
                raise NothingFound(
                    f"no dead letter at {', '.join(missing)} in {t.dlq}; nothing was sent"
                )
        else:
            chosen = q.select(server, t.dlq, f, timeout_s=timeout_s, progress=progress, stats=stats)
            letters = sorted(chosen.letters, key=lambda d: (d.record.partition, d.record.offset))
        inv = q.Inventory(letters, q.trail(server, t.audit))
    if not letters:
        raise NothingFound(f"no dead letter in {t.dlq} matches; nothing to replay")
    items = q.plan_replay(inv, letters, actor, s.dlq_max_replays)
    allowed = [i for i in items if i.allowed]
    verb = "would be sent" if dry_run else "to be sent"
    run_transfer(
        replay,
        Plan(
            heading=f"{len(allowed)} of {len(items)} dead letter(s) {verb} as {actor}"
            f" (limit {s.dlq_max_replays} replays per record):",
            lines=[_replay_line(i) for i in items],
            sends=[
                Send(
                    i.letter.position,
                    i.letter.position,
                    (i.target or "", i.letter.record.key, i.letter.record.value, i.headers),
                )
                for i in allowed
            ],
            audit_items=lambda sent: q.audit_items(items, sent),
            question=f"Send {len(allowed)} record(s) back to their topics?",
            verb="replayed",
            refused=len(items) - len(allowed),
        ),
    )


def _replay_line(i: q.ReplayItem) -> str:
    d = i.letter
    who = f"{cell(d.tenant_id, 16)} {cell(d.payment_id, 18)}"
    if not i.allowed:
        return f"  {d.position:<9} {who} REFUSED: {i.refusal}"
    return (
        f"  {d.position:<9} {who} → {i.target}: key {safe_bytes(d.record.key, 40)}, "
        f"{len(d.record.value or b'')} bytes, {len(i.headers)} headers "
        f"(dlq.replay_count={i.replays + 1})"
    )
