"""`python -m worker publish-registers`: register snapshots checked (R1–R12) and published,
with `--preflight` after the tenant's Xledger checks (`preflight.py`), which only an
audited `--force` overrides. Loading and publishing: `worker/ops/snapshot_publishing.py`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from worker.config import Settings
from worker.contracts import RegisterSnapshot
from worker.core.endpoints import UrlPolicy
from worker.kafka_clients.connection import Bootstrap
from worker.kafka_clients.sync_clients import BrokerError as KafkaError
from worker.ops import audit
from worker.ops.commands.options import bootstrap_option, settings_for, topics_option, with_topics
from worker.ops.commands.output import RefusedExit, audit_logging, failures
from worker.ops.commands.preflight import print_report
from worker.ops.errors import BrokerUnavailable, TopicMissing
from worker.ops.preflight import Environment, preflight
from worker.ops.snapshot_publishing import SnapshotsInvalid, load, publish

FORCED_PUBLISH = "registers.publish_forced"  # the audit trail's name for the action


@dataclass(frozen=True)
class DemoSnapshots:
    """Where `--demo` takes the demo tenants' snapshots from. Production code never imports
    the demo (import-linter), so `worker/cli.py` puts this in the click context."""

    load: Callable[[], list[dict[str, Any]]]


@click.command("publish-registers")
@bootstrap_option
@topics_option
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A RegisterSnapshot JSON file: one snapshot or a list.",
)
@click.option("--demo", is_flag=True, help="Publish the demo tenants' snapshots instead.")
@click.option(
    "--allow-sandbox-url", is_flag=True, help="Accept loopback sandbox URLs (development only, R2)."
)
@click.option(
    "--preflight",
    "run_preflight",
    is_flag=True,
    help="Run `preflight` first: publish nothing when a tenant's Xledger checks fail.",
)
@click.option(
    "--force", is_flag=True, help="With --preflight: publish anyway (audited; needs --actor)."
)
@click.option("--actor", help="Who forces the publish (--force), for the audit trail.")
@click.option("--role", "roles", multiple=True, help="The actor's roles (--force); repeatable.")
@click.pass_context
def publish_registers(
    ctx: click.Context,
    bootstrap: str | None,
    topic_overrides: tuple[str, ...],
    path: Path | None,
    demo: bool,
    allow_sandbox_url: bool,
    run_preflight: bool,
    force: bool,
    actor: str | None,
    roles: tuple[str, ...],
) -> None:
    """Check register snapshots (R1–R12) and publish them to the registers topic.

    R13 (the publisher's roles) is judged by the worker, against the snapshot in force.
    With --preflight, each tenant's snapshot is first checked against its own Xledger
    entity (`preflight`); a forced publish over a failed preflight is audited.
    """
    if demo == (path is not None):
        raise click.UsageError("give exactly one of --file and --demo")
    if force and not (run_preflight and actor):
        raise click.UsageError("--force goes with --preflight and --actor USER (it is audited)")
    s, server = settings_for(bootstrap)
    s = replace(s, topics=with_topics(s, topic_overrides))
    if demo:
        source = ctx.find_object(DemoSnapshots)
        if source is None:  # run outside `worker/cli.py`: no demo to take them from
            raise click.UsageError("--demo is not offered here: give --file")
        snapshots = source.load()
    else:
        assert path is not None
        try:
            snapshots = load(path, UrlPolicy(allow_sandbox=allow_sandbox_url))
        except SnapshotsInvalid as exc:
            for problem in exc.problems:
                click.echo(problem, err=True)
            raise click.ClickException("nothing was published") from None
    if run_preflight:
        n = publish_after_preflight(server, s, snapshots, force=force, actor=actor, roles=roles)
    else:
        with failures():
            n = publish(server, s.topics.registers, snapshots)
    click.echo(f"published {n} snapshot(s) to {s.topics.registers}")


def publish_after_preflight(
    server: Bootstrap,
    s: Settings,
    snapshots: list[dict[str, Any]],
    *,
    force: bool,
    actor: str | None,
    roles: tuple[str, ...],
) -> int:
    """Run the preflight on the snapshots about to be published; publish nothing when an
    Xledger check of any fails or cannot be made, unless `force`; a forced publish is
    written to the audit trail (who, when, which snapshots, and what the preflight found).
    Returns how many were published."""
    parsed = [RegisterSnapshot.model_validate(d) for d in snapshots]
    env = Environment.of(s, os.environ)
    try:
        env.check()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    reports = asyncio.run(preflight(parsed, env, source="publish-registers --preflight"))
    for r in reports:
        print_report(r)
    blocked = {r.tenant_id: r.xledger_problems() for r in reports if r.xledger_problems()}
    if not blocked:
        with failures():
            return publish(server, s.topics.registers, snapshots)
    names = ", ".join(blocked)
    if not force:
        raise RefusedExit(
            f"nothing was published: the Xledger checks of {names} failed or could not be "
            "made (✗ and ? above). Fix them, or publish anyway with --force --actor USER "
            "(audited)"
        )
    assert actor, "the command requires --actor with --force"
    audit_logging(s)  # the operator_action line, as the other audited commands
    failure: str | None = None
    try:
        publish(server, s.topics.registers, snapshots)
    except (KafkaError, BrokerUnavailable) as exc:
        failure = f"publishing failed: {exc}"
    items = [
        audit.AuditItem(
            source=f"{snap.tenant_id} v{snap.version}",
            outcome="failed" if failure else "sent",
            target=s.topics.registers,
            tenant_id=snap.tenant_id,
            reason="; ".join(f"{c.mark} {c.text}" for c in blocked.get(snap.tenant_id, [])) or None,
        )
        for snap in parsed
    ]
    record = audit.AuditRecord(
        FORCED_PUBLISH,
        actor,
        list(roles),
        "failed" if failure else "done",
        failure or f"published with --force although the preflight failed for {names}",
        items,
    )
    try:
        at = audit.write(server, s.topics.audit, record)
    except (BrokerUnavailable, TopicMissing) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"audit record {at}")
    if failure:
        raise click.ClickException(failure)
    return len(snapshots)
