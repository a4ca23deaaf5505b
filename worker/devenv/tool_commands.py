"""`python -m worker broker|kafka|sandbox`: the development tools in the foreground (the
embedded broker, Apache Kafka from Maven Central's jars, the Xledger sandbox). Each stops
every process it started, however it ends."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import click


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


@click.command()
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


@click.command()
@click.option("--brokers", default="1", show_default=True, type=click.Choice(["1", "3"]))
@click.option("--port", default=9092, show_default=True, type=click.IntRange(1, 65533))
@click.option(
    "--sasl-ssl",
    is_flag=True,
    help="Clients on a SASL_SSL listener only (SCRAM-SHA-512, a throw-away CA), as a "
    "production cluster: prints the client settings (FLYT_KAFKA_* and --command-config).",
)
def kafka(brokers: str, port: int, sasl_ssl: bool) -> None:
    """Run Apache Kafka (KRaft, jars from Maven Central) on loopback in the foreground;
    broker i listens on port+i-1. Ctrl-C or SIGTERM stops every broker. librdkafka
    clients (kcat, kafka-ui) connect to it, as they cannot to the embedded Tansu."""
    import time

    from worker.devenv.kafka_cluster import KafkaCluster, KafkaUnavailable, kafka_version

    cluster = KafkaCluster(brokers=int(brokers), port=port, sasl_ssl=sasl_ssl)
    try:
        with _until_signalled():
            cluster.start()
            click.echo(
                f"Apache Kafka {kafka_version()}, {brokers} broker(s), "
                f"bootstrap {cluster.bootstrap}"
            )
            if cluster.client is not None:
                click.echo(f"SASL_SSL: --command-config {cluster.client.properties}, or")
                for name, value in cluster.client.env().items():
                    click.echo(f"  export {name}={value}")
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
    from worker.devenv.sandbox import serve

    try:
        serve(port, profile, token_dir, ledger)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass
