"""`python -m worker preflight`: the options, and the checklist as a person reads it (also
printed by `publish-registers --preflight`, `publish_registers.py`). The checks themselves:
`worker/ops/preflight/`."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import click

from worker import config
from worker.contracts import PaymentStatusEvent, RegisterSnapshot
from worker.exit_status import SettingsRefused
from worker.kafka_clients.connection import Bootstrap
from worker.ops.commands.options import command_config_option, connection_for
from worker.ops.errors import BrokerUnavailable, TopicMissing
from worker.ops.preflight import (
    EXIT_FAILED,
    EXIT_OK,
    SECTIONS,
    SUMMARY,
    Environment,
    Status,
    TenantReport,
    exit_code,
    preflight,
)
from worker.ops.safe_text import escape

DEFAULT_RECENT = 200

EPILOG = """\b
Exit codes: 0 every check passed; 4 something would be refused or rejected (✗: each
line says what to do); 1 something could not be checked (?: the line says why), or the
command could not run; 2 bad usage."""


class CouldNotCheck(click.ClickException):
    exit_code = 1


@click.command(epilog=EPILOG)
@click.option(
    "--snapshot",
    "snapshot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A RegisterSnapshot JSON file: one snapshot or a list (one per tenant). Without "
    "it: the snapshot in force of --tenant, from the registers topic.",
)
@click.option("--tenant", help="Check this tenant only.")
@click.option(
    "--bootstrap",
    metavar="HOST:PORT",
    help="Kafka bootstrap servers (default: FLYT_BOOTSTRAP_SERVERS): the snapshot in force, "
    "R13 against it, and the recent payments.",
)
@click.option(
    "--recent",
    type=click.IntRange(0),
    help=f"How many of the tenant's newest Betalt payments to evaluate (default "
    f"{DEFAULT_RECENT} with a broker); needs a broker.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per tenant.")
@command_config_option
def preflight_command(
    snapshot_path: Path | None,
    tenant: str | None,
    bootstrap: str | None,
    recent: int | None,
    as_json: bool,
) -> None:
    """Onboarding a municipality: check a tenant's settings and registers against its
    own Xledger entity before the first payment. Read only; each tenant's own token,
    sent only to the URLs R2 allows (a loopback sandbox only with FLYT_SANDBOX=1 and
    FLYT_XLEDGER_ENDPOINT), paced as the worker's requests. Prints a checklist in the
    order of the onboarding guide: Oppsett Xledger, Oppsett Flyt, Økonomiinnstillinger,
    and a summary."""
    try:
        s = config.from_env()
    except ValueError as exc:
        raise SettingsRefused(str(exc)) from None
    server = bootstrap or s.bootstrap
    if snapshot_path is None and not (tenant and server):
        raise click.UsageError(
            "give --snapshot S.json, or --tenant T with a broker (--bootstrap HOST:PORT or "
            "FLYT_BOOTSTRAP_SERVERS) for the snapshot in force"
        )
    if recent and not server:
        raise click.UsageError("--recent reads the payment-status topic: name the broker")
    n_recent = recent if recent is not None else (DEFAULT_RECENT if server else 0)
    env = Environment.of(s, os.environ)
    try:
        env.check()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    drafts: list[RegisterSnapshot] = []
    if snapshot_path is not None:
        drafts = _read_file(snapshot_path, tenant)
    in_force: dict[str, RegisterSnapshot | None] | None = None
    events: dict[str, list[PaymentStatusEvent]] | None = None
    note = None
    if server:
        try:
            in_force, events = _read_topics(connection_for(s, server), s, n_recent)
        except (BrokerUnavailable, TopicMissing) as exc:
            raise CouldNotCheck(str(exc)) from None
        if n_recent == 0:
            events, note = None, "--recent 0"
    source = str(snapshot_path) if snapshot_path else f"gjeldende versjon på {s.topics.registers}"
    if snapshot_path is None:
        assert tenant is not None and in_force is not None
        current = in_force.get(tenant)
        if current is None:
            raise CouldNotCheck(f"no snapshot of {tenant} is in force on {s.topics.registers}")
        drafts, in_force = [current], None  # in force: R13 was judged when it was accepted
    reports = asyncio.run(
        preflight(
            drafts,
            env,
            source=source,
            in_force=in_force,
            recent=events,
            recent_note=note,
            snapshots_in_force=snapshot_path is None,
        )
    )
    for r in reports:
        if as_json:
            click.echo(json.dumps(r.to_json(), ensure_ascii=False))
        else:
            print_report(r)
    code = exit_code(reports)
    if not as_json:
        click.echo(outcome_line(reports))
    if code != EXIT_OK:
        raise SystemExit(code)


def _read_file(path: Path, tenant: str | None) -> list[RegisterSnapshot]:
    from worker.offline import SnapshotFileError, read_snapshot_file

    try:
        found, notes = read_snapshot_file(path)
    except SnapshotFileError as exc:
        raise CouldNotCheck(str(exc)) from None
    if notes:
        for note in notes:
            click.echo(note, err=True)
        raise CouldNotCheck(f"{path} holds a snapshot that is not a RegisterSnapshot")
    snapshots = [snap for _, snap in found if tenant is None or snap.tenant_id == tenant]
    if not snapshots:
        raise CouldNotCheck(f"{path} holds no snapshot" + (f" of {tenant}" if tenant else ""))
    return snapshots


def _read_topics(
    server: Bootstrap, s: config.Settings, recent: int
) -> tuple[dict[str, RegisterSnapshot | None], dict[str, list[PaymentStatusEvent]]]:
    """The snapshot in force per tenant, and each tenant's `recent` newest Betalt events
    (the newest event of each payment), newest first."""
    from worker.ops.rejections import newest_betalt
    from worker.ops.snapshots_in_force import read_in_force
    from worker.ops.topic_reader import read_topics

    t = s.topics
    got = read_topics(server, [t.registers])
    history = read_in_force(got[t.registers])
    in_force: dict[str, RegisterSnapshot | None] = {}
    for tenant in history.book.tenants():
        index = history.book.index(tenant)
        in_force[tenant] = index.snapshot if index is not None else None
    events: dict[str, list[PaymentStatusEvent]] = {}
    if recent:
        for tenant, pairs in newest_betalt(server, t.payments, None, recent).items():
            events[tenant] = [event for _, event in pairs]
    return in_force, events


# --- the checklist on a terminal --------------------------------------------------------


def print_report(r: TenantReport, echo: Callable[[str], object] = click.echo) -> None:
    echo(f"Forhåndssjekk for {escape(r.tenant_id)}, versjon {r.version} ({escape(r.source)})")
    for section in SECTIONS:
        echo(section)
        if section == SUMMARY:
            refusals = r.worker_refusals()
            echo(
                "  Workeren ville avvise registrene: "
                + (f"ja, av {len(refusals)} grunner (se over)" if refusals else "nei")
            )
            codes = r.refused_codes()
            xledger_unknown = any(
                c.xledger and c.status in (Status.SKIPPED, Status.UNCHECKED) for c in r.checks
            )
            echo(
                "  Xledger ville avvise: "
                + (
                    escape("; ".join(codes))
                    if codes
                    else "ikke sjekket helt (se – og ? over)"
                    if xledger_unknown
                    else "ingenting"
                )
            )
        for c in r.checks:
            if c.section != section:
                continue
            echo(f"  {c.mark} {escape(c.text)}")
            if c.todo and c.status in (Status.FAILED, Status.UNCHECKED):
                echo(f"      → {escape(c.todo)}")
    failed = len(r.lines(Status.FAILED))
    echo(
        f"  {failed} av {len(r.checks)} sjekker feilet; {r.requests} forespørsler til Xledger"
        if failed
        else f"  Ingen sjekk feilet; {r.requests} forespørsler til Xledger"
    )
    echo("")


def outcome_line(reports: list[TenantReport]) -> str:
    code = exit_code(reports)
    if code == EXIT_OK:
        return f"Alle sjekker bestått for {len(reports)} tjeneste(r)."
    failed = [r.tenant_id for r in reports if r.exit_code == EXIT_FAILED]
    unchecked = [r.tenant_id for r in reports if r.exit_code not in (EXIT_OK, EXIT_FAILED)]
    parts = []
    if failed:
        parts.append(f"noe ville bli avvist for {', '.join(failed)} (✗)")
    if unchecked:
        parts.append(f"noe kunne ikke sjekkes for {', '.join(unchecked)} (?)")
    return "Ikke klar: " + "; ".join(parts) + "."
