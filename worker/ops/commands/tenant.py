"""`python -m worker tenant pause|resume`: stop one tenant's posting by hand, on every
worker, and start it again (R13: Økonomiinnstillinger; audited). The records and who may
write them: `worker/ops/tenant_control.py`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from worker.ops import audit
from worker.ops import tenant_control as control
from worker.ops.authority import Refused, require_okonomiinnstillinger
from worker.ops.commands.options import (
    bootstrap_option,
    settings_for,
    timeout_option,
    topics_option,
    with_topics,
)
from worker.ops.commands.output import (
    EXIT_CODES,
    NothingFound,
    RefusedExit,
    audit_logging,
    failures,
)
from worker.ops.safe_text import escape
from worker.ops.snapshots_in_force import read_in_force
from worker.ops.topic_reader import read_topics

F = TypeVar("F", bound=Callable[..., Any])


@click.group(epilog=EXIT_CODES)
def tenant() -> None:
    """Pause one tenant's posting to Xledger by hand, on every worker, and resume it.

    A paused tenant's payments are still read and enriched, then held: never
    dead-lettered, never rejected for the pause. Other tenants flow. On resume the held
    payments are posted, each looked up in Xledger first (nothing is posted twice).
    Needs Økonomiinnstillinger (R13); every pause and resume is on the audit topic.
    """


def _who(f: F) -> F:
    f = click.option(
        "--role",
        "roles",
        multiple=True,
        required=True,
        help="The actor's roles; repeatable. Pausing and resuming need Økonomiinnstillinger.",
    )(f)
    return click.option("--actor", required=True, help="Who does it (R13), e.g. a Flyt user id.")(f)


def _change(
    action: str,
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    tenant_id: str,
    reason: str,
    actor: str,
    roles: tuple[str, ...],
    timeout_s: float,
    *,
    paused: bool,
) -> None:
    s, server = settings_for(bootstrap)
    t = with_topics(s, topic_overrides)
    what = "pausing a tenant's posting" if paused else "resuming a tenant's posting"
    audit_logging(s)
    item = audit.AuditItem(
        source=t.control, outcome="refused", target=t.control, tenant_id=tenant_id
    )
    try:
        require_okonomiinnstillinger(actor, list(roles), what)
    except Refused as exc:
        item.reason = str(exc)
        refusal = audit.AuditRecord(action, actor, list(roles), "refused", str(exc), [item])
        with failures():
            audit.write(server, t.audit, refusal)
        raise RefusedExit(f"{exc}; nothing was changed") from None
    with failures():
        registers = read_topics(server, [t.registers], timeout_s=timeout_s)[t.registers]
        known = read_in_force(registers).book.index(tenant_id) is not None
        before = control.read_states(server, t.control, timeout_s).get(tenant_id)
    if not known:
        raise NothingFound(
            f"no tenant {tenant_id} has a register snapshot in force on {t.registers}: "
            "check the name; nothing was changed"
        )
    if not paused and (before is None or not before.paused):
        raise NothingFound(f"{tenant_id} is not paused by hand; nothing was changed")
    if paused and before is not None and before.paused:
        click.echo(f"{tenant_id} was already {control.describe(before)}")
    record = control.control_record(tenant_id, actor, list(roles), reason, paused=paused)
    with failures():
        where = control.write(server, t.control, record)
        item.outcome, item.sent_to, item.reason = "sent", where, reason or None
        audit_at = audit.write(
            server, t.audit, audit.AuditRecord(action, actor, list(roles), "done", reason, [item])
        )
    click.echo(f"{escape(tenant_id)} {escape(control.describe(record))} → {where}")
    if paused:
        click.echo(
            "Every worker holds its payments within seconds (enriched, not posted); "
            f"`worker tenant resume {tenant_id}` posts them."
        )
    else:
        click.echo("Its held payments are posted now, each looked up in Xledger first.")
    click.echo(f"audit record {audit_at}")


@tenant.command("pause", epilog=EXIT_CODES)
@click.argument("tenant_id", metavar="TENANT")
@click.option("--reason", required=True, help="Why, for the people who see it in `status`.")
@_who
@bootstrap_option
@topics_option
@timeout_option
def pause(
    tenant_id: str,
    reason: str,
    actor: str,
    roles: tuple[str, ...],
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    timeout_s: float,
) -> None:
    """Stop posting TENANT's payments to Xledger, on every worker, until resumed."""
    if not reason.strip():
        raise click.BadParameter("say why the tenant is paused", param_hint="--reason")
    _change(
        audit.PAUSE,
        bootstrap,
        topic_overrides,
        tenant_id,
        reason.strip(),
        actor,
        roles,
        timeout_s,
        paused=True,
    )


@tenant.command("resume", epilog=EXIT_CODES)
@click.argument("tenant_id", metavar="TENANT")
@click.option("--reason", default="", help="Why it may post again (optional).")
@_who
@bootstrap_option
@topics_option
@timeout_option
def resume(
    tenant_id: str,
    reason: str,
    actor: str,
    roles: tuple[str, ...],
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    timeout_s: float,
) -> None:
    """Post TENANT's payments again; what was held is posted, each looked up first."""
    _change(
        audit.RESUME,
        bootstrap,
        topic_overrides,
        tenant_id,
        reason.strip(),
        actor,
        roles,
        timeout_s,
        paused=False,
    )
