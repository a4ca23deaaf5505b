"""What every operator command takes the same way: the broker (`--bootstrap HOST:PORT`),
topic names (`--topic KIND=NAME`), tenants (`--tenant T`, repeatable wherever it filters),
a period (`--since`/`--until` or `--month`, Oslo days), how long a read may wait
(`--timeout`), and the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from worker import config
from worker.exit_status import SettingsRefused
from worker.kafka_clients.command_config import from_properties
from worker.kafka_clients.connection import KafkaConnection
from worker.kafka_clients.errors import KafkaSettingsError
from worker.ops.topic_reader import DEFAULT_TIMEOUT_S
from worker.ops.when import Period, parse_when, period_of

F = TypeVar("F", bound=Callable[..., Any])


def bootstrap_option(f: F) -> F:
    """`--bootstrap HOST:PORT` and `--command-config FILE` (how to reach it)."""
    return click.option(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: FLYT_BOOTSTRAP_SERVERS).",
    )(command_config_option(f))


_COMMAND_CONFIG = "flyt.command_config"


def command_config_option(f: F) -> F:
    """`--command-config FILE`, as Kafka's own tools take it: the client properties
    (security.protocol, ssl.truststore.location, sasl.mechanism, sasl.jaas.config …) that
    reach a secured cluster; without it, the FLYT_KAFKA_* settings. Kept in the context,
    for `settings_for` / `connection_for`, so each command's signature stays as it is."""

    def remember(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
        ctx.meta[_COMMAND_CONFIG] = value

    return click.option(
        "--command-config",
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False,
        callback=remember,
        help="Kafka client properties for a secured cluster (security.protocol, "
        "ssl.truststore.location, sasl.mechanism, sasl.jaas.config …; see the README); "
        "default: the FLYT_KAFKA_* settings.",
    )(f)


def connection_for(s: config.Settings, server: str) -> KafkaConnection:
    """The broker at `server`, reached as --command-config says, else as the settings do."""
    ctx = click.get_current_context(silent=True)
    path = ctx.meta.get(_COMMAND_CONFIG) if ctx is not None else None
    try:
        security = (
            from_properties(path, warn=lambda line: click.echo(line, err=True))
            if path is not None
            else s.kafka
        )
    except KafkaSettingsError as exc:
        raise SettingsRefused(str(exc)) from None
    return KafkaConnection(server, security)


def topics_option(f: F) -> F:
    return click.option(
        "--topic",
        "topic_overrides",
        multiple=True,
        metavar="KIND=NAME",
        help="Use topic NAME for KIND (payments, registers, submissions, receipts, "
        "rejections, dlq, audit, control) instead of its FLYT_TOPIC_* setting; repeatable. "
        "A demo run on an external broker names its topics in its summary, under 'topics'.",
    )(f)


def tenant_option(f: F) -> F:
    return click.option(
        "--tenant",
        "tenants",
        multiple=True,
        metavar="T",
        help="Only this tenant; repeatable (any of them).",
    )(f)


def period_options(what: str) -> Callable[[F], F]:
    """--since, --until and --month; `what` says which time is judged."""

    def decorate(f: F) -> F:
        f = click.option(
            "--month",
            metavar="YYYY-MM",
            help=f"{what} in this Oslo month (2026-11), or 'previous'; instead of --since/--until.",
        )(f)
        f = click.option(
            "--until",
            metavar="WHEN",
            help=f"{what} before WHEN (a date: to the end of that Oslo day).",
        )(f)
        return click.option(
            "--since",
            metavar="WHEN",
            help=f"{what} at or after WHEN: 30m, 2h, 7d ago, a date (an Oslo day) or an "
            "ISO time (Oslo time without an offset).",
        )(f)

    return decorate


def period(since: str | None, until: str | None, month: str | None) -> Period:
    try:
        return period_of(since, until, month)
    except ValueError as exc:
        hint = "--month" if month is not None else "--since/--until"
        raise click.BadParameter(str(exc), param_hint=hint) from None


def timeout_option(f: F) -> F:
    return click.option(
        "--timeout",
        "timeout_s",
        default=DEFAULT_TIMEOUT_S,
        show_default=True,
        type=click.FloatRange(1),
        metavar="SECONDS",
        help="How long a read may wait for the broker without receiving anything.",
    )(f)


def settings_for(bootstrap: str | None) -> tuple[config.Settings, KafkaConnection]:
    """The settings (FLYT_* variables) and the broker to read: --bootstrap, else the
    setting; neither is a usage error."""
    try:
        s = config.from_env()
    except ValueError as exc:
        raise SettingsRefused(str(exc)) from None
    server = bootstrap or s.bootstrap
    if not server:
        raise click.UsageError("name the broker: --bootstrap HOST:PORT or FLYT_BOOTSTRAP_SERVERS")
    return s, connection_for(s, server)


def with_topics(
    s: config.Settings, overrides: tuple[str, ...], bare: str | None = None
) -> config.Topics:
    """The topics, with --topic KIND=NAME applied. Where a command reads one topic above
    all (`dlq …`), `bare` names its kind, and --topic NAME alone means that one."""
    kinds = {f for f in asdict(s.topics)}
    changes: dict[str, str] = {}
    for item in overrides:
        kind, sep, name = item.partition("=")
        if not sep and bare is not None and kind:
            kind, sep, name = bare, "=", kind
        if not sep or kind not in kinds or not name:
            raise click.BadParameter(
                f"{item!r} is not KIND=NAME with KIND one of {', '.join(sorted(kinds))}",
                param_hint="--topic",
            )
        changes[kind] = name
    return replace(s.topics, **changes)


def when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_when(text, end=option == "--until")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def actor_options(roles_help: str, actor_help: str) -> Callable[[F], F]:
    """--actor and --role: who does it, and in which roles (R13), as every command that
    changes something names them."""

    def add(f: F) -> F:
        f = click.option("--role", "roles", multiple=True, required=True, help=roles_help)(f)
        return click.option("--actor", required=True, help=actor_help)(f)

    return add
