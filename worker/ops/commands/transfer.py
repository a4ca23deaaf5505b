"""A manual transfer to Xledger (R13), as `dlq replay` and `rejections resend` both run it:
authorize → (a refusal is audited) → plan → print → dry run → confirm → send → audit.

The command chooses the records and says how each reads (`Plan`); this module keeps the
order of the steps, what the audit trail gets, and how the command ends, the same for
both: a dry run writes nothing; a refusal, a send and a failed send are each one audit
record; every record sent is named with where it went.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import click

from worker import config
from worker.kafka_clients.connection import Bootstrap
from worker.ops import audit
from worker.ops.authority import Refused, require_okonomi
from worker.ops.commands import options
from worker.ops.commands.output import NothingFound, RefusedExit, audit_logging, failures
from worker.ops.errors import BrokerUnavailable
from worker.ops.topic_reader import send

K = TypeVar("K", bound=Hashable)

# (topic, key, value, headers): a record as `topic_reader.send` takes it.
OutRecord = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]

DRY_RUN = "dry run: nothing was sent, nothing was written"


# Who does a manual transfer (R13).
actor_options = options.actor_options(
    "The actor's roles; repeatable. A manual transfer needs Økonomi (R13).",
    "Who transfers them (R13), e.g. a Flyt user id.",
)


@dataclass(frozen=True)
class Transfer:
    """Who transfers, as which audited action, through which broker."""

    action: str  # audit.REPLAY or audit.RESEND
    settings: config.Settings
    server: Bootstrap
    audit_topic: str
    actor: str
    roles: list[str]
    dry_run: bool
    yes: bool

    def authorize(self) -> None:
        """R13: a named actor holding Økonomi. A refusal is audited (a dry run writes
        nothing) and ends the command with exit 4, before anything is read."""
        try:
            require_okonomi(self.actor, self.roles)
        except Refused as exc:
            if not self.dry_run:
                audit_logging(self.settings)
                refusal = audit.AuditRecord(
                    self.action, self.actor, self.roles, "refused", str(exc)
                )
                with failures():
                    audit.write(self.server, self.audit_topic, refusal)
            raise RefusedExit(f"{exc}; nothing was sent") from None


@dataclass(frozen=True)
class Send(Generic[K]):
    key: K  # names the record in the audit items
    label: str  # names it to the operator
    record: OutRecord


@dataclass
class Plan(Generic[K]):
    """What the command would do, as the operator reads it before saying yes."""

    heading: str
    lines: list[str]
    sends: list[Send[K]]  # in the order they are sent
    audit_items: Callable[[dict[K, str]], list[audit.AuditItem]]  # given what was sent
    question: str  # asked before sending, unless --yes
    verb: str  # "replayed", "resent": what was done to a record sent
    refused: int = 0  # items refused (the replay limit): the command ends with exit 4
    # With nothing to send: end here, "nothing found" (else the refusals are audited).
    nothing_to_send: str | None = None


def run_transfer(t: Transfer, plan: Plan[K]) -> None:
    """Print the plan; unless a dry run, confirm, send and audit it."""
    click.echo(plan.heading)
    for line in plan.lines:
        click.echo(line)
    if t.dry_run:
        click.echo(DRY_RUN)
        if plan.refused:
            raise RefusedExit(f"{plan.refused} record(s) would be refused")
        return
    if not plan.sends and plan.nothing_to_send:
        raise NothingFound(plan.nothing_to_send)
    if plan.sends and not t.yes:
        click.confirm(plan.question, abort=True)
    audit_logging(t.settings)
    failure: str | None = None
    try:
        where = send(t.server, [s.record for s in plan.sends])
    except BrokerUnavailable as exc:  # what was sent before the failure is still audited
        where, failure = exc.sent, str(exc)
    sent = {s.key: at for s, at in zip(plan.sends, where, strict=False)}
    outcome = "failed" if failure else ("partly_refused" if plan.refused else "done")
    if not plan.sends:
        outcome = "refused"
    record = audit.AuditRecord(t.action, t.actor, t.roles, outcome, failure, plan.audit_items(sent))
    with failures():
        audit_at = audit.write(t.server, t.audit_topic, record)
    for s in plan.sends:
        if s.key in sent:
            click.echo(f"{plan.verb} {s.label} → {sent[s.key]}")
    click.echo(f"audit record {audit_at}")
    if failure:
        raise click.ClickException(failure)
    if plan.refused:
        raise RefusedExit(f"{plan.refused} record(s) refused, {len(sent)} {plan.verb}")
