"""The operator commands: `dlq …`, `rejections …`, `status`, `whatif`.

Each reads topics with assigned partitions (no consumer group is joined or moved) and
names its topics by the FLYT_TOPIC_* settings or by --topic. Exit codes, the same for all:
0 done, 1 failed (broker, topic, file), 2 bad usage, 3 nothing found, 4 refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from worker import config
from worker.contracts import DlqReason, ProblemCode
from worker.ops.authority import Refused, require_okonomi
from worker.ops.errors import BrokerUnavailable, TopicMissing
from worker.ops.options import bootstrap_option, settings_for, topics_option, when, with_topics
from worker.ops.safe_text import escape, safe_bytes
from worker.ops.when import age

EXIT_FAILED = 1
EXIT_NOTHING = 3
EXIT_REFUSED = 4

EXIT_CODES = """\b
Exit codes: 0 done; 1 failed (broker unreachable, topic missing, unreadable file);
2 bad usage; 3 nothing found (no record matches); 4 refused (missing role, replay
limit reached, a draft the worker would refuse)."""

F = TypeVar("F", bound=Callable[..., Any])


class NothingFound(click.ClickException):
    exit_code = EXIT_NOTHING


class RefusedExit(click.ClickException):
    exit_code = EXIT_REFUSED


@contextmanager
def _failures() -> Iterator[None]:
    """Broker and topic trouble as one line for the operator, never a traceback."""
    try:
        yield
    except (BrokerUnavailable, TopicMissing) as exc:
        raise click.ClickException(str(exc)) from None


# --- shared options ----------------------------------------------------------------------


# In worker/ops/options.py, shared with `reconcile`; the old names kept here.
_bootstrap_option = bootstrap_option
_topics_option = topics_option
_settings = settings_for
_with_topics = with_topics
_when = when


def _cell(value: object, width: int) -> str:
    text = escape(str(value if value is not None else "-"))
    return text if len(text) <= width else text[: width - 1] + "…"


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, default=str))


def _audit_logging(s: config.Settings) -> None:
    from worker import logs

    logs.configure(s.log_level)  # JSON lines on standard error, as the worker's
    # kafka-python's connection chatter is not what an operator reads here.
    logging.getLogger("kafka").setLevel(logging.WARNING)


# --- dlq -------------------------------------------------------------------------------------


@click.group(epilog=EXIT_CODES)
def dlq() -> None:
    """Inspect and replay the dead-letter queue (xledger.dlq.v1, or FLYT_TOPIC_DLQ).

    A dead letter is an event or submission the worker could not read, or could not post
    after its retries; it carries the original bytes and the reason in dlq.* headers.
    A position P@O is a DLQ partition and offset, as `dlq list` shows it.
    """


def _dlq_topic_option(f: F) -> F:
    return click.option(
        "--topic",
        "topic",
        metavar="NAME",
        help="The DLQ topic (default: FLYT_TOPIC_DLQ or xledger.dlq.v1).",
    )(f)


def _dlq_filter_options(f: F) -> F:
    for decorator in reversed(
        [
            click.option("--tenant", help="Only this tenant (read from the record's value)."),
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
            click.option(
                "--since",
                metavar="WHEN",
                help="Dead-lettered at or after WHEN: 30m, 2h, 7d ago, a date or an ISO time.",
            ),
            click.option("--until", metavar="WHEN", help="Dead-lettered at or before WHEN."),
        ]
    ):
        f = decorator(f)
    return f


def _dlq_filter(
    tenant: str | None,
    payment: str | None,
    reason: str | None,
    stage: str | None,
    since: str | None,
    until: str | None,
) -> Any:
    from worker.ops.dead_letter_queue import DlqFilter

    return DlqFilter(
        tenant, payment, reason, stage, _when(since, "--since"), _when(until, "--until")
    )


@dlq.command("list", epilog=EXIT_CODES)
@_bootstrap_option
@_dlq_topic_option
@_dlq_filter_options
@click.option("--limit", type=click.IntRange(1), help="At most this many rows (newest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
def dlq_list(
    bootstrap: str | None,
    topic: str | None,
    tenant: str | None,
    payment: str | None,
    reason: str | None,
    stage: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List dead letters, newest first: where, how old, whose, why, how often replayed."""
    from worker.ops import dead_letter_queue as q

    s, server = _settings(bootstrap)
    dlq_topic = topic or s.topics.dlq
    f = _dlq_filter(tenant, payment, reason, stage, since, until)
    with _failures():
        inv = q.read(server, dlq_topic, s.topics.audit)
    now = datetime.now(UTC)
    chosen = inv.select(f, limit)
    if not chosen:
        raise NothingFound(
            f"no dead letter in {dlq_topic} matches ({len(inv.letters)} record(s) in all)"
        )
    rows = [d.row(now, inv.replays(d)) for d in chosen]
    if as_json:
        for row in rows:
            _echo_json(row)
        return
    click.echo(
        f"{'POSITION':<10} {'AGE':>7}  {'TENANT':<16} {'PAYMENT':<20} {'STAGE':<6} "
        f"{'REASON':<20} {'REPLAYS':>7}  MESSAGE"
    )
    for r in rows:
        click.echo(
            f"{r['position']:<10} {r['age']:>7}  {_cell(r['tenant_id'], 16):<16} "
            f"{_cell(r['payment_id'], 20):<20} {_cell(r['stage'], 6):<6} "
            f"{_cell(r['reason'], 20):<20} {r['replay_count']:>7}  {_cell(r['message'], 90)}"
        )
    click.echo(f"{len(rows)} of {len(inv.letters)} dead letter(s) in {dlq_topic}")


@dlq.command("show", epilog=EXIT_CODES)
@click.argument("position", metavar="P@O")
@_bootstrap_option
@_dlq_topic_option
@click.option("--json", "as_json", is_flag=True, help="The record as one JSON object.")
def dlq_show(bootstrap: str | None, position: str, topic: str | None, as_json: bool) -> None:
    """Show one dead letter whole: its headers, key and value.

    A value that parses as JSON is pretty-printed; one that does not is shown escaped
    (control characters and undecodable bytes as \\xNN) and cut with its full length.
    """
    from worker.ops import dead_letter_queue as q

    try:
        where = q.parse_position(position)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="P@O") from None
    s, server = _settings(bootstrap)
    dlq_topic = topic or s.topics.dlq
    with _failures():
        inv = q.read(server, dlq_topic, s.topics.audit)
    found, missing = inv.at([where])
    if missing:
        raise NothingFound(f"no dead letter at {position} in {dlq_topic}")
    d = found[0]
    r = d.record
    body = d.body
    if as_json:
        _echo_json(
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
@_bootstrap_option
@_dlq_topic_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def dlq_stats(bootstrap: str | None, topic: str | None, as_json: bool) -> None:
    """Count dead letters by reason, tenant and stage; the oldest and the newest."""
    from worker.ops import dead_letter_queue as q

    s, server = _settings(bootstrap)
    dlq_topic = topic or s.topics.dlq
    with _failures():
        inv = q.read(server, dlq_topic)
    st = q.stats(inv.letters)
    if as_json:
        _echo_json({"topic": dlq_topic, **st})
    else:
        click.echo(f"{st['total']} dead letter(s) in {dlq_topic}")
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
        raise NothingFound(f"{dlq_topic} is empty")


@dlq.command("replay", epilog=EXIT_CODES)
@_bootstrap_option
@_dlq_topic_option
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
@click.option("--actor", required=True, help="Who transfers them (R13), e.g. a Flyt user id.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    help="The actor's roles; repeatable. A manual transfer needs Økonomi (R13).",
)
@click.option("--dry-run", is_flag=True, help="Say exactly what would be sent; send nothing.")
@click.option("--yes", is_flag=True, help="Do not ask before sending.")
@click.option("--audit-topic", metavar="NAME", help="Audit topic (default: FLYT_TOPIC_AUDIT).")
def dlq_replay(
    bootstrap: str | None,
    topic: str | None,
    positions: tuple[str, ...],
    tenant: str | None,
    payment: str | None,
    reason: str | None,
    stage: str | None,
    since: str | None,
    until: str | None,
    replay_all: bool,
    actor: str,
    roles: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    audit_topic: str | None,
) -> None:
    """Send dead letters back to the topic they came from, to be processed again.

    Choose them with --at, with the filters, or with --all. The original key, value and
    headers go back byte for byte, with dlq.replay_count and dlq.replayed_by set. A
    record replayed FLYT_DLQ_MAX_REPLAYS times (3) is refused: find out why it fails.
    A payment that had in fact been posted is not posted again (the worker looks it up
    in Xledger first). Every replay, and every refused one, is written to the audit
    topic and the log; a dry run writes nothing.
    """
    from worker.ops import audit
    from worker.ops import dead_letter_queue as q
    from worker.ops.topic_reader import send

    filters = (tenant, payment, reason, stage, since, until)
    if positions and (replay_all or any(v is not None for v in filters)):
        raise click.UsageError("give either --at positions, or --all and/or filters, not both")
    if not positions and not replay_all and all(v is None for v in filters):
        raise click.UsageError("choose what to replay: --at P@O, filters (--tenant …) or --all")
    try:
        wanted = [q.parse_position(p) for p in positions]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    f = _dlq_filter(*filters)
    s, server = _settings(bootstrap)
    dlq_topic = topic or s.topics.dlq
    trail = audit_topic or s.topics.audit
    try:
        q.authorize(actor, list(roles))
    except Refused as exc:
        if not dry_run:
            _audit_logging(s)
            with _failures():
                audit.write(
                    server,
                    trail,
                    audit.AuditRecord(audit.REPLAY, actor, list(roles), "refused", str(exc)),
                )
        raise RefusedExit(f"{exc}; nothing was sent") from None
    with _failures():
        inv = q.read(server, dlq_topic, trail)
    if wanted:
        letters, missing = inv.at(wanted)
        if missing:
            raise NothingFound(
                f"no dead letter at {', '.join(missing)} in {dlq_topic}; nothing was sent"
            )
    else:
        letters = sorted(inv.select(f), key=lambda d: (d.record.partition, d.record.offset))
    if not letters:
        raise NothingFound(f"no dead letter in {dlq_topic} matches; nothing to replay")
    items = q.plan_replay(inv, letters, actor, s.dlq_max_replays)
    allowed = [i for i in items if i.allowed]
    refused = [i for i in items if not i.allowed]
    verb = "would be sent" if dry_run else "to be sent"
    click.echo(
        f"{len(allowed)} of {len(items)} dead letter(s) {verb} as {actor}"
        f" (limit {s.dlq_max_replays} replays per record):"
    )
    for i in items:
        d = i.letter
        who = f"{_cell(d.tenant_id, 16)} {_cell(d.payment_id, 18)}"
        if i.allowed:
            click.echo(
                f"  {d.position:<9} {who} → {i.target}: key {safe_bytes(d.record.key, 40)}, "
                f"{len(d.record.value or b'')} bytes, {len(i.headers)} headers "
                f"(dlq.replay_count={i.replays + 1})"
            )
        else:
            click.echo(f"  {d.position:<9} {who} REFUSED: {i.refusal}")
    if dry_run:
        click.echo("dry run: nothing was sent, nothing was written")
        if refused:
            raise RefusedExit(f"{len(refused)} record(s) would be refused")
        return
    if allowed and not yes:
        click.confirm(f"Send {len(allowed)} record(s) back to their topics?", abort=True)
    _audit_logging(s)
    sent: dict[str, str] = {}
    failure: str | None = None
    try:
        where = send(
            server,
            [
                (i.target or "", i.letter.record.key, i.letter.record.value, i.headers)
                for i in allowed
            ],
        )
    except BrokerUnavailable as exc:
        where, failure = exc.sent, str(exc)
    for item, at in zip(allowed, where, strict=False):
        sent[item.letter.position] = at
    outcome = "failed" if failure else ("partly_refused" if refused else "done")
    if not allowed:
        outcome = "refused"
    record = audit.AuditRecord(
        audit.REPLAY, actor, list(roles), outcome, failure, q.audit_items(items, sent)
    )
    with _failures():
        audit_at = audit.write(server, trail, record)
    for position, at in sent.items():
        click.echo(f"replayed {position} → {at}")
    click.echo(f"audit record {audit_at}")
    if failure:
        raise click.ClickException(failure)
    if refused:
        raise RefusedExit(f"{len(refused)} record(s) refused, {len(sent)} replayed")


# --- rejections ------------------------------------------------------------------------------


@click.group(epilog=EXIT_CODES)
def rejections() -> None:
    """Rejected payments for finance staff (the Økonomi tab), and resending them.

    A rejected payment could not be posted for a reason finance staff can fix, usually a
    gap in the tenant's registers; it waits until a newer register snapshot fills the
    gap (R16) or someone with Økonomi resends it (R13).
    """


def _read_rejections(server: str, t: config.Topics, payments: bool) -> dict[str, Any]:
    from worker.ops.topic_reader import read_topics

    names = [t.rejections, t.receipts] + ([t.payments, t.registers] if payments else [])
    with _failures():
        return read_topics(server, names)


@rejections.command("list", epilog=EXIT_CODES)
@_bootstrap_option
@_topics_option
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
    from worker.ops.rejections import read_rejections

    s, server = _settings(bootstrap)
    t = _with_topics(s, topic_overrides)
    got = _read_rejections(server, t, payments=False)
    book = read_rejections(got[t.rejections], got[t.receipts])
    chosen = book.select(
        tenant, code, list(payments), None if state == "all" else state, _when(since, "--since")
    )[:limit]
    if not chosen:
        raise NothingFound(
            f"no rejected payment matches ({len(book.payments)} rejected payment(s) in "
            f"{t.rejections})"
        )
    if as_json:
        for p in chosen:
            _echo_json(p.row())
        return
    click.echo(f"{'TENANT':<16} {'PAYMENT':<18} {'CODE':<24} {'SINCE':>8}  {'STATE':<8} MESSAGE")
    for p in chosen:
        more = len(p.latest.problems) - 1
        message = p.latest.problems[0].message + (f" (+{more} more)" if more else "")
        click.echo(
            f"{_cell(p.tenant_id, 16):<16} {_cell(p.payment_id, 18):<18} "
            f"{_cell(p.latest.reason, 24):<24} {age(p.first_at):>8}  {p.state:<8} "
            f"{_cell(message, 100)}"
        )
    waiting = sum(1 for p in chosen if p.state == "waiting")
    click.echo(
        f"{len(chosen)} rejected payment(s): {waiting} waiting, "
        f"{len(chosen) - waiting} posted since"
    )


@rejections.command("resend", epilog=EXIT_CODES)
@_bootstrap_option
@_topics_option
@click.option("--tenant", required=True, help="The tenant whose rejected payments to resend.")
@click.option("--payment", "payments", multiple=True, help="Only this payment id; repeatable.")
@click.option(
    "--code",
    type=click.Choice([str(c) for c in ProblemCode]),
    help="Only those rejected for this code.",
)
@click.option("--all-waiting", is_flag=True, help="Every waiting rejected payment of the tenant.")
@click.option("--actor", required=True, help="Who transfers them (R13), e.g. a Flyt user id.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    help="The actor's roles; repeatable. Resending needs Økonomi (R13).",
)
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
    from worker.ops import audit
    from worker.ops.rejections import audit_items as resend_audit_items
    from worker.ops.rejections import betalt_events, plan_resend, read_rejections, resend_record
    from worker.ops.snapshots_in_force import read_in_force
    from worker.ops.topic_reader import send

    if not (payments or code or all_waiting):
        raise click.UsageError("choose what to resend: --payment ID, --code CODE or --all-waiting")
    s, server = _settings(bootstrap)
    t = _with_topics(s, topic_overrides)
    try:
        require_okonomi(actor, list(roles))
    except Refused as exc:
        if not dry_run:
            _audit_logging(s)
            with _failures():
                audit.write(
                    server,
                    t.audit,
                    audit.AuditRecord(audit.RESEND, actor, list(roles), "refused", str(exc)),
                )
        raise RefusedExit(f"{exc}; nothing was sent") from None
    got = _read_rejections(server, t, payments=True)
    book = read_rejections(got[t.rejections], got[t.receipts])
    chosen = book.select(tenant, code, list(payments), None if payments else "waiting")
    if not chosen:
        raise NothingFound(f"no rejected payment of {tenant} matches; nothing to resend")
    registers = read_in_force(got[t.registers]).book
    items = plan_resend(chosen, betalt_events(got[t.payments]), registers)
    to_send = [i for i in items if i.skip is None]
    version = registers.version(tenant)
    click.echo(
        f"{len(to_send)} of {len(items)} payment(s) of {tenant} "
        f"{'would be' if dry_run else 'to be'} resent as {actor}; "
        f"snapshot in force: {'v' + str(version) if version else 'none'}"
    )
    for i in items:
        p = i.payment
        if i.skip is None:
            codes = f": {', '.join(i.codes)}" if i.codes else ""
            click.echo(
                f"  {_cell(p.payment_id, 18):<18} {p.latest.reason!s:<24} → expected: "
                f"{i.expected}{codes}"
            )
        else:
            click.echo(f"  {_cell(p.payment_id, 18):<18} {p.latest.reason!s:<24} skipped: {i.skip}")
    if dry_run:
        click.echo("dry run: nothing was sent, nothing was written")
        return
    if not to_send:
        raise NothingFound("nothing to resend")
    if not yes:
        click.confirm(f"Resend {len(to_send)} payment(s)?", abort=True)
    _audit_logging(s)
    failure = None
    try:
        where = send(server, [resend_record(i.source, actor) for i in to_send if i.source])
    except BrokerUnavailable as exc:
        where, failure = exc.sent, str(exc)
    sent = {
        (i.payment.tenant_id, i.payment.payment_id): at
        for i, at in zip(to_send, where, strict=False)
    }
    record = audit.AuditRecord(
        audit.RESEND,
        actor,
        list(roles),
        "failed" if failure else "done",
        failure,
        resend_audit_items(items, sent),
    )
    with _failures():
        audit_at = audit.write(server, t.audit, record)
    for (_, payment_id), at in sent.items():
        click.echo(f"resent {payment_id} → {at}")
    click.echo(f"audit record {audit_at}")
    if failure:
        raise click.ClickException(failure)


# --- status ----------------------------------------------------------------------------------


@click.command(epilog=EXIT_CODES)
@_bootstrap_option
@_topics_option
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
    from worker.ops.dead_letter_queue import DeadLetter
    from worker.ops.rejections import read_rejections
    from worker.ops.snapshots_in_force import read_in_force
    from worker.ops.tenant_status import MetricsUnavailable, paused_from_metrics, statuses
    from worker.ops.topic_reader import read_topics

    s, server = _settings(bootstrap)
    t = _with_topics(s, topic_overrides)
    paused = None
    if metrics_url:
        try:
            paused = paused_from_metrics(metrics_url)
        except MetricsUnavailable as exc:
            raise click.ClickException(str(exc)) from None
    with _failures():
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
            _echo_json(x.to_json())
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


# --- whatif ----------------------------------------------------------------------------------


@click.command(epilog=EXIT_CODES)
@click.option(
    "--snapshot",
    "draft_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The draft RegisterSnapshot JSON file (one snapshot, or a list: one per tenant).",
)
@_bootstrap_option
@_topics_option
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
def whatif(
    draft_path: Path,
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    recent: int,
    show: int,
    as_json: bool,
) -> None:
    """What would this register change do? Before publishing a draft snapshot: which of
    the tenant's waiting rejections would now post, which would still fail and why, and
    which of its recent payments would get a different accounting string (or start to
    fail). The draft is judged as the worker would (R1–R13). Nothing is published.
    Exit 4 when the worker would refuse the draft."""
    from worker.core.endpoints import UrlPolicy
    from worker.offline import SnapshotFileError, read_snapshot_file
    from worker.ops.rejections import betalt_events, read_rejections
    from worker.ops.snapshots_in_force import read_in_force
    from worker.ops.topic_reader import read_topics
    from worker.ops.whatif import what_if

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
    s, server = _settings(bootstrap)
    t = _with_topics(s, topic_overrides)
    with _failures():
        got = read_topics(server, [t.registers, t.rejections, t.receipts, t.payments])
    history = read_in_force(got[t.registers])
    book = read_rejections(got[t.rejections], got[t.receipts])
    events = betalt_events(got[t.payments])
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
            _echo_json(report.to_json())
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


def _print_whatif(r: Any, show: int) -> None:
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

    def rows(title: str, outcomes: list[Any], fmt: Callable[[Any], str]) -> None:
        click.echo(f"  {title} ({len(outcomes)})")
        for o in outcomes[:show]:
            click.echo(f"    {_cell(o.payment_id, 18):<18} {fmt(o)}")
        if len(outcomes) > show:
            click.echo(f"    … and {len(outcomes) - show} more (--show N, or --json)")

    def diff(o: Any) -> str:
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
        lambda o: f"{_cell(_accounting(o.before), 50)} → {_accounting(o.after)}",
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
