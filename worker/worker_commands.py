"""`python -m worker run|enrich|bench`: the worker itself, its rules offline, and its
figures (`worker/bench/`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from worker.core.endpoints import UrlPolicy
from worker.exit_status import SettingsRefused

if TYPE_CHECKING:
    from worker.config import UnknownVariable


@click.command()
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
    from worker.engine.topics import NotEnoughBrokers, TopicsUndescribed
    from worker.kafka_clients.errors import KafkaSettingsError, KafkaUnreachable
    from worker.pipeline.wiring import SettingsConflict
    from worker.runtime import WorkerCrashed
    from worker.topic_check import TopicsMismatch

    try:
        # Logging first: a warning about the settings (an unknown FLYT_* variable) is a log
        # line like any other; the level the settings ask for follows.
        logs.configure("INFO")
        s = config.from_env(warn=_unknown_variable)
        logs.configure(s.log_level)
    except ValueError as exc:  # FLYT_* values, FLYT_LOG_FORMAT: one line, exit 78
        raise SettingsRefused(str(exc)) from None
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
    try:
        if server:
            from worker.runtime import run as run_worker

            asyncio.run(run_worker(replace(s, bootstrap=server), server))
        else:
            try:
                from worker.demo.harness import run_embedded
            except ImportError as exc:  # the image holds production only
                raise click.UsageError(
                    f"--embedded needs the embedded broker and the sandbox ({exc.name} is not "
                    "installed): pip install -e '.[dev]' (production images have neither)"
                ) from None
            asyncio.run(run_embedded(s, demo_rate))
    except WorkerCrashed as exc:  # logged as worker_crashed; the supervisor restarts us
        raise click.ClickException(f"the worker stopped: {exc}") from None
    except NotEnoughBrokers as exc:  # the cluster, or a setting, to fix: say which
        raise click.ClickException(str(exc)) from None
    except (SettingsConflict, KafkaSettingsError, TopicsMismatch) as exc:
        # A refused certificate or password, a secret file that cannot be read, topics
        # whose partitions do not match: one line, exit 78, no retry (a restart cannot
        # cure it).
        raise SettingsRefused(str(exc)) from None
    except (KafkaUnreachable, TopicsUndescribed) as exc:  # the broker may be starting: exit 1
        raise click.ClickException(str(exc)) from None


def _unknown_variable(unknown: UnknownVariable) -> None:
    from worker import logs

    # The name alone: the value may be anything (a password set under a wrong name).
    logs.get("worker.config").warning(
        "setting_unknown", variable=unknown.name, did_you_mean=unknown.closest
    )


@click.command()
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


@click.command()
@click.option("--quick", is_flag=True, help="Shorter runs: fewer windows, points, events.")
@click.option(
    "--broker",
    "broker_kind",
    default=None,
    type=click.Choice(["tansu", "kafka"]),
    help="Tansu (the default), or Apache Kafka (the default with --scaling: 3 brokers).",
)
@click.option(
    "--month-start",
    is_flag=True,
    help="Instead: all-Betalt bursts up to 50,000 events over up to 356 tenants.",
)
@click.option(
    "--scaling",
    is_flag=True,
    help="Instead: 1 → 3 workers in one group on Apache Kafka with 3 brokers.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the summary, its series and PNGs into this folder (matplotlib, .[dev]).",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep every worker's log (and py-spy's, tracemalloc's files) in this folder.",
)
@click.option(
    "--py-spy",
    "py_spy",
    is_flag=True,
    help="--month-start: py-spy samples the largest point's worker; its top frames go into "
    "the summary (pip install py-spy). That point's figures are then not the worker's own.",
)
@click.option(
    "--tracemalloc",
    "traced",
    is_flag=True,
    help="--month-start: every worker under tracemalloc; what holds its memory at its peak, "
    "and per added tenant. A diagnostic run: its speed and RSS are not the worker's.",
)
def bench(
    quick: bool,
    broker_kind: str | None,
    month_start: bool,
    scaling: bool,
    report_dir: Path | None,
    log_dir: Path | None,
    py_spy: bool,
    traced: bool,
) -> None:
    """Throughput, latency and Xledger requests on one broker, beside plain aiokafka;
    progress on stderr, the last line a JSON summary."""
    from worker import logs
    from worker.bench.diagnostics import Diagnostics, py_spy_command
    from worker.bench.month_start import MONTH_START, MONTH_START_QUICK, run_month_start
    from worker.bench.runner import FULL, QUICK, run
    from worker.bench.scaling import SCALING, SCALING_QUICK, run_scaling
    from worker.devenv.kafka_cluster import KafkaUnavailable

    if month_start and scaling:
        raise click.UsageError("--month-start and --scaling are separate runs: choose one")
    if scaling and broker_kind == "tansu":
        raise click.UsageError("--scaling runs on Apache Kafka with 3 brokers")
    if (py_spy or traced) and not month_start:
        raise click.UsageError("--py-spy and --tracemalloc go with --month-start")
    if py_spy and py_spy_command() is None:
        raise click.UsageError("--py-spy needs py-spy: pip install py-spy")
    diagnostics = Diagnostics(log_dir=log_dir, py_spy=py_spy, tracemalloc=traced)
    if report_dir is not None:
        try:
            import matplotlib  # noqa: F401 - only asked whether it is there
        except ImportError:
            raise click.UsageError("--report needs matplotlib: pip install -e '.[dev]'") from None
    logs.configure("WARNING")
    series: dict[str, Any] = {}
    try:
        if month_start:
            plan = MONTH_START_QUICK if quick else MONTH_START
            summary = run_month_start(
                plan, broker_kind or "tansu", series=series, diagnostics=diagnostics
            )
        elif scaling:
            plan_s = SCALING_QUICK if quick else SCALING
            summary = run_scaling(plan_s, "kafka", series=series, diagnostics=diagnostics)
        else:
            plan_r = QUICK if quick else FULL
            summary = run(plan_r, broker_kind or "tansu", series=series, diagnostics=diagnostics)
    except (KafkaUnavailable, TimeoutError, RuntimeError) as exc:
        raise click.ClickException(f"bench failed: {exc}") from None
    except KeyboardInterrupt:
        raise click.ClickException("bench interrupted") from None
    if report_dir is not None:
        from worker.bench.report import write_report

        for path in write_report(report_dir, summary, series):
            click.echo(f"report: {path}", err=True)
    click.echo(json.dumps(summary, ensure_ascii=False))
