"""`python -m worker demo|demo-data|offline-demo|sandbox|chaos`: the demo data, the whole
pipeline once on it, the Xledger sandbox with the demo tenants, and the reliability
campaign (`chaos/`)."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import click

from worker.exit_status import SettingsRefused


@click.command()
@click.option("--events", "n_events", default=3000, show_default=True, type=click.IntRange(0))
@click.option("--bad", "n_bad", default=0, show_default=True, type=click.IntRange(0))
@click.option("--faults", is_flag=True, help="Turn on the sandbox's mixed fault profile.")
@click.option("--bootstrap", help="Use this broker (left running) instead of the embedded one.")
@click.option(
    "--command-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --bootstrap: Kafka client properties for a secured broker (security.protocol, "
    "ssl.truststore.location, sasl.mechanism, sasl.jaas.config …), as Kafka's tools take them.",
)
@click.option("--ledger-out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--metrics-out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--timeout", "timeout_s", default=300.0, show_default=True, type=float)
@click.option(
    "--rate",
    type=click.FloatRange(1),
    help="Publish about this many events per "
    "second instead of all at once (latency in steady state, not under a backlog).",
)
def demo(
    n_events: int,
    n_bad: int,
    faults: bool,
    bootstrap: str | None,
    command_config: Path | None,
    ledger_out: Path | None,
    metrics_out: Path | None,
    timeout_s: float,
    rate: float | None,
) -> None:
    """Run the whole pipeline once on demo data; the last line is a JSON summary."""
    import asyncio

    from worker import logs
    from worker.demo.harness import demo as run_demo
    from worker.kafka_clients.command_config import from_properties
    from worker.kafka_clients.errors import KafkaSettingsError, KafkaUnreachable

    if command_config is not None and bootstrap is None:
        raise click.UsageError(
            "--command-config goes with --bootstrap (the embedded broker is plain)"
        )
    logs.configure("WARNING")
    try:
        kafka = (
            from_properties(command_config, warn=lambda line: click.echo(line, err=True))
            if command_config is not None
            else None
        )
        summary = asyncio.run(
            run_demo(
                n_events, n_bad, faults, bootstrap, ledger_out, metrics_out, timeout_s, rate, kafka
            )
        )
    except KafkaSettingsError as exc:  # refused TLS or SASL, a file that cannot work
        raise SettingsRefused(str(exc)) from None
    except KafkaUnreachable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(summary))
    raise SystemExit(0 if summary["unaccounted"] == 0 else 1)


@click.command("demo-data")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--events", "n_events", default=1000, show_default=True, type=click.IntRange(0))
@click.option(
    "--bad",
    "n_bad",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Also write this many unreadable or invalid lines.",
)
@click.option("--seed", default=2026, show_default=True, type=int)
def demo_data(out_dir: Path, n_events: int, n_bad: int, seed: int) -> None:
    """Write the demo snapshots and generated events as files for `enrich`."""
    snapshots, events = _write_demo_files(out_dir, n_events, n_bad, seed)
    click.echo(f"wrote {snapshots} and {events}")


def _write_demo_files(out_dir: Path, n_events: int, n_bad: int, seed: int) -> tuple[Path, Path]:
    from worker.demo.events import bad_event_lines, generate_events
    from worker.demo.snapshots import demo_snapshot_dicts

    out_dir.mkdir(parents=True, exist_ok=True)
    snapshots = out_dir / "snapshots.json"
    snapshots.write_text(json.dumps(demo_snapshot_dicts(), ensure_ascii=False, indent=1), "utf-8")
    events = out_dir / "events.jsonl"
    with events.open("w", encoding="utf-8") as f:
        for event in generate_events(n_events, seed=seed):
            f.write(json.dumps(event, ensure_ascii=False) + "\n")
        for line in bad_event_lines(n_bad):
            f.write(line.replace("\n", " ") + "\n")
    return snapshots, events


@click.command("offline-demo")
@click.option("--events", "n_events", default=2000, show_default=True, type=click.IntRange(0))
@click.option("--bad", "n_bad", default=20, show_default=True, type=click.IntRange(0))
def offline_demo(n_events: int, n_bad: int) -> None:
    """Evaluate generated demo events offline and print the outcomes per tenant."""
    from worker.offline import enrich_lines, load_book

    with tempfile.TemporaryDirectory() as tmp:
        snapshots, events = _write_demo_files(Path(tmp), n_events, n_bad, 2026)
        book, notes = load_book(snapshots)
        with events.open("rb") as f:
            records = list(enrich_lines(f, book))
    for note in notes:
        click.echo(note, err=True)
    table: Counter[tuple[str, str]] = Counter()
    reasons: Counter[str] = Counter()
    for r in records:
        table[(r["tenant_id"] or "(unreadable)", r["outcome"])] += 1
        if r["outcome"] == "rejection":
            reasons[r["reason"]] += 1
    outcomes = ["submission", "rejection", "ignored", "duplicate", "invalid"]
    click.echo(f"{'tenant':<18}" + "".join(f"{o:>12}" for o in outcomes))
    for tenant in sorted({t for t, _ in table}):
        click.echo(f"{tenant:<18}" + "".join(f"{table[(tenant, o)]:>12}" for o in outcomes))
    click.echo(
        f"{'total':<18}"
        + "".join(f"{sum(v for (t, o), v in table.items() if o == name):>12}" for name in outcomes)
    )
    click.echo("rejections by reason: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))


@click.command()
@click.option("--port", default=8099, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--faults",
    "profile",
    default="none",
    show_default=True,
    help="Fault profile: none, 5xx, drop, slow, commit-then-fail, burst, mixed, staging-cleared.",
)
@click.option(
    "--token-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo tenants' tokens are read from, or written to if missing.",
)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Start with the lines of this ledger dump (a demo's --ledger-out), dbIds kept.",
)
def sandbox(port: int, profile: str, token_dir: Path | None, ledger: Path | None) -> None:
    """Run the local Xledger sandbox (the demo tenants) in the foreground.

    Besides Xledger's API it answers `POST /sandbox/vouchers/double|delete` with
    `{"extIdentifiers": [...]}` and a tenant's token: a voucher posted twice, or gone."""
    from worker.demo.harness import serve_sandbox

    try:
        serve_sandbox(port, profile, token_dir, ledger)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


@click.command()
@click.option("--events", "n_events", default=3000, show_default=True, type=click.IntRange(1))
@click.option("--kills", default=5, show_default=True, type=click.IntRange(0))
@click.option("--workers", "n_workers", default=2, show_default=True, type=click.IntRange(1, 8))
@click.option(
    "--broker",
    "broker_kind",
    default="tansu",
    show_default=True,
    type=click.Choice(["tansu", "kafka"]),
)
@click.option(
    "--broker-kills",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Kafka only: SIGKILL and restart a broker this often (a three-broker cluster).",
)
@click.option("--profile", default="mixed", show_default=True, help="The sandbox's fault profile.")
@click.option("--ledger-out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", default=2026, show_default=True, type=int)
@click.option("--rate", default=50.0, show_default=True, type=click.FloatRange(1), help="Events/s.")
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the worker and broker logs here (default: a temporary folder, kept on failure).",
)
def chaos(
    n_events: int,
    kills: int,
    n_workers: int,
    broker_kind: str,
    broker_kills: int,
    profile: str,
    ledger_out: Path | None,
    seed: int,
    rate: float,
    log_dir: Path | None,
) -> None:
    """The reliability campaign (R14): workers and brokers killed while demo events flow
    into a faulty Xledger sandbox; then the sandbox's ledger is checked. Progress on
    stderr; the last line a JSON summary; exit 0 only when nothing was lost or doubled."""
    from asyncio import CancelledError

    from worker import logs
    from worker.demo.chaos import CampaignAborted, ChaosOptions, ChaosUsageError
    from worker.demo.chaos import run as run_chaos
    from worker.devenv.kafka_cluster import KafkaUnavailable

    o = ChaosOptions(
        events=n_events,
        kills=kills,
        workers=n_workers,
        broker=broker_kind,
        broker_kills=broker_kills,
        profile=profile,
        ledger_out=ledger_out,
        seed=seed,
        rate=rate,
        log_dir=log_dir,
    )
    try:
        o.check()
    except ChaosUsageError as exc:
        raise click.UsageError(str(exc)) from None
    logs.configure("WARNING")
    try:
        code = run_chaos(o)
    except (KafkaUnavailable, TimeoutError) as exc:
        raise click.ClickException(f"chaos could not start: {exc}") from None
    except CampaignAborted as exc:
        raise click.ClickException(f"chaos stopped: {exc}") from None
    except (KeyboardInterrupt, CancelledError):
        click.echo("chaos interrupted; every process it started is stopped", err=True)
        raise SystemExit(130) from None
    raise SystemExit(code)
