"""`python -m worker …`: the commands operators and developers use."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import click

from worker.core.endpoints import UrlPolicy
from worker.ops import commands as ops_commands
from worker.ops import preflight_cli, reconcile_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Flyt → Xledger worker: posts Betalt child-welfare payments to Xledger."""


@main.command()
@click.option(
    "--snapshot",
    "snapshot_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A RegisterSnapshot JSON file: one snapshot or a list (any tenants).",
)
@click.option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PaymentStatusEvent JSON lines; '-' for standard input.",
)
@click.option(
    "--allow-sandbox-url",
    is_flag=True,
    help="Accept loopback sandbox URLs in snapshots (development only, R2).",
)
def enrich(snapshot_path: Path, events_path: Path, allow_sandbox_url: bool) -> None:
    """Evaluate events against snapshots offline: one JSON line out per line in."""
    from worker.offline import SnapshotFileError, enrich_lines, load_book

    try:
        book, notes = load_book(snapshot_path, UrlPolicy(allow_sandbox=allow_sandbox_url))
    except SnapshotFileError as exc:
        raise click.ClickException(str(exc)) from None
    for note in notes:
        click.echo(note, err=True)
    try:
        source = sys.stdin.buffer if str(events_path) == "-" else events_path.open("rb")
    except OSError as exc:
        raise click.ClickException(f"cannot read {events_path}: {exc.strerror}") from None
    out = sys.stdout
    with source:
        for record in enrich_lines(source, book):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


@main.command("demo-data")
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
    from worker.demo.registers import demo_snapshot_dicts

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


@main.command("offline-demo")
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


@contextlib.contextmanager
def _until_signalled() -> Iterator[None]:
    """The block runs until SIGINT or SIGTERM (SIGINT even where it was inherited as
    ignored, as in a background job); from then on both are ignored, so that the caller's
    clean-up of its child processes runs to its end."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@main.command()
@click.option("--port", default=9092, show_default=True, type=click.IntRange(1, 65535))
def broker(port: int) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory only) in the foreground.
    Ctrl-C or SIGTERM stops it; so does the end of this process, however it ends."""
    from worker.devenv.tansu import EmbeddedBroker

    tansu = EmbeddedBroker(port)
    try:
        with _until_signalled():
            tansu.start()
            click.echo(f"Tansu on {tansu.bootstrap} (memory only); Ctrl-C stops it", err=True)
            code = tansu.wait()
            raise click.ClickException(f"Tansu exited by itself (code {code})")
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        tansu.stop()


@main.command()
@click.option("--brokers", default="1", show_default=True, type=click.Choice(["1", "3"]))
@click.option("--port", default=9092, show_default=True, type=click.IntRange(1, 65533))
def kafka(brokers: str, port: int) -> None:
    """Run Apache Kafka (KRaft, jars from Maven Central) on loopback in the foreground;
    broker i listens on port+i-1. Ctrl-C or SIGTERM stops every broker."""
    import time

    from worker.devenv.kafka_cluster import KafkaCluster, KafkaUnavailable, kafka_version

    cluster = KafkaCluster(brokers=int(brokers), port=port)
    try:
        with _until_signalled():
            cluster.start()
            click.echo(
                f"Apache Kafka {kafka_version()}, {brokers} broker(s), "
                f"bootstrap {cluster.bootstrap}"
            )
            sys.stdout.flush()
            reported: set[int] = set()
            while True:  # a broker that dies is reported; the command ends when none is left
                time.sleep(1.0)
                for i in range(1, int(brokers) + 1):
                    if i not in reported and not cluster.alive(i):
                        reported.add(i)
                        click.echo(f"Kafka broker {i} exited: {cluster.log_tail(i, 3)}", err=True)
                if len(reported) == int(brokers):
                    raise click.ClickException("every Kafka broker has exited")
    except (KafkaUnavailable, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        cluster.stop()


@main.command()
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
    from worker.devenv.sandbox import serve

    try:
        serve(port, profile, token_dir, ledger)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


@main.command()
@click.option(
    "--bootstrap",
    help="Kafka bootstrap servers (default: FLYT_BOOTSTRAP_SERVERS). Required unless --embedded.",
)
@click.option(
    "--embedded",
    is_flag=True,
    help="The embedded default instead: embedded broker, Xledger sandbox, demo registers "
    "and events (what `make run` does). Never for production.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Prometheus metrics port (default 9108; 0 turns it off).",
)
@click.option(
    "--demo-rate",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="--embedded only: demo events per second.",
)
def run(bootstrap: str | None, embedded: bool, metrics_port: int | None, demo_rate: float) -> None:
    """Run the worker until interrupted. Settings come from FLYT_* variables."""
    import asyncio
    from dataclasses import replace

    from worker import config, logs
    from worker.engine.topics import NotEnoughBrokers
    from worker.pipeline.wiring import SettingsConflict
    from worker.runtime import WorkerCrashed

    try:
        s = config.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    server = bootstrap or s.bootstrap
    if embedded and server:
        raise click.UsageError("--embedded runs its own broker: leave out the bootstrap servers")
    if not embedded and not server:
        # A production pod with a missing setting must fail loudly, not post to a sandbox.
        raise click.UsageError(
            "no broker: set FLYT_BOOTSTRAP_SERVERS or pass --bootstrap HOST:PORT "
            "(or --embedded for the embedded default with demo data)"
        )
    if metrics_port is not None:
        s = replace(s, metrics_port=metrics_port or None)
    logs.configure(s.log_level)
    try:
        if server:
            from worker.runtime import run as run_worker

            asyncio.run(run_worker(replace(s, bootstrap=server), server))
        else:
            from worker.demo.harness import run_embedded

            asyncio.run(run_embedded(s, demo_rate))
    except WorkerCrashed as exc:  # logged as worker_crashed; the supervisor restarts us
        raise click.ClickException(f"the worker stopped: {exc}") from None
    except (NotEnoughBrokers, SettingsConflict) as exc:  # a setting to fix: say which
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--events", "n_events", default=3000, show_default=True, type=click.IntRange(0))
@click.option("--bad", "n_bad", default=0, show_default=True, type=click.IntRange(0))
@click.option("--faults", is_flag=True, help="Turn on the sandbox's mixed fault profile.")
@click.option("--bootstrap", help="Use this broker (left running) instead of the embedded one.")
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
    ledger_out: Path | None,
    metrics_out: Path | None,
    timeout_s: float,
    rate: float | None,
) -> None:
    """Run the whole pipeline once on demo data; the last line is a JSON summary."""
    import asyncio

    from worker import logs
    from worker.demo.harness import demo as run_demo

    logs.configure("WARNING")
    summary = asyncio.run(
        run_demo(n_events, n_bad, faults, bootstrap, ledger_out, metrics_out, timeout_s, rate)
    )
    click.echo(json.dumps(summary))
    raise SystemExit(0 if summary["unaccounted"] == 0 else 1)


@main.command()
@click.option("--quick", is_flag=True, help="Shorter steady runs, two windows (under 5 min).")
@click.option(
    "--broker",
    "broker_kind",
    default="tansu",
    show_default=True,
    type=click.Choice(["tansu", "kafka"]),
)
def bench(quick: bool, broker_kind: str) -> None:
    """Throughput, latency and Xledger requests on one broker, beside plain aiokafka;
    progress on stderr, the last line a JSON summary."""
    from worker import logs
    from worker.bench.runner import FULL, QUICK, run
    from worker.devenv.kafka_cluster import KafkaUnavailable

    logs.configure("WARNING")
    try:
        summary = run(QUICK if quick else FULL, broker_kind)
    except (KafkaUnavailable, TimeoutError, RuntimeError) as exc:
        raise click.ClickException(f"bench failed: {exc}") from None
    except KeyboardInterrupt:
        raise click.ClickException("bench interrupted") from None
    click.echo(json.dumps(summary, ensure_ascii=False))


@main.command()
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
    from worker.demo.chaos import ChaosOptions, ChaosUsageError
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
    except (KeyboardInterrupt, CancelledError):
        click.echo("chaos interrupted; every process it started is stopped", err=True)
        raise SystemExit(130) from None
    raise SystemExit(code)


# The operator commands: worker/ops/commands.py.
main.add_command(ops_commands.dlq)
main.add_command(ops_commands.rejections)
main.add_command(ops_commands.status)
main.add_command(ops_commands.whatif)
main.add_command(preflight_cli.preflight_command, "preflight")  # worker/ops/preflight*.py
main.add_command(reconcile_command.reconcile)  # worker/ops/reconcile_command.py


@main.command("publish-registers")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: FLYT_BOOTSTRAP_SERVERS).")
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
def publish_registers(
    bootstrap: str | None,
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
    from worker import config
    from worker.ops.registers import SnapshotsInvalid, load, publish

    if demo == (path is not None):
        raise click.UsageError("give exactly one of --file and --demo")
    if force and not (run_preflight and actor):
        raise click.UsageError("--force goes with --preflight and --actor USER (it is audited)")
    s = config.from_env()
    server = bootstrap or s.bootstrap
    if not server:
        raise click.ClickException("name the broker: --bootstrap or FLYT_BOOTSTRAP_SERVERS")
    if demo:
        from worker.demo.registers import demo_snapshot_dicts

        snapshots = demo_snapshot_dicts()
    else:
        assert path is not None
        try:
            snapshots = load(path, UrlPolicy(allow_sandbox=allow_sandbox_url))
        except SnapshotsInvalid as exc:
            for problem in exc.problems:
                click.echo(problem, err=True)
            raise click.ClickException("nothing was published") from None
    if run_preflight:
        n = preflight_cli.publish_after_preflight(
            server, s, snapshots, force=force, actor=actor, roles=roles
        )
    else:
        n = publish(server, s.topics.registers, snapshots)
    click.echo(f"published {n} snapshot(s) to {s.topics.registers}")
