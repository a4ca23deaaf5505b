"""`python -m worker broker|kafka`: the development brokers in the foreground (the embedded
broker, Apache Kafka from Maven Central's jars). Each stops every process it started,
however it ends. The Xledger sandbox with the demo tenants: `worker/demo/demo_commands.py`."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

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
