"""What every operator command takes the same way: the broker, topic names (`--topic
KIND=NAME`), the settings, and times as operators type them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any, TypeVar

import click

from worker import config
from worker.ops.when import parse_when

F = TypeVar("F", bound=Callable[..., Any])


def bootstrap_option(f: F) -> F:
    return click.option(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: FLYT_BOOTSTRAP_SERVERS).",
    )(f)


def topics_option(f: F) -> F:
    return click.option(
        "--topic",
        "topic_overrides",
        multiple=True,
        metavar="KIND=NAME",
        help="Use topic NAME for KIND (payments, registers, receipts, rejections, dlq, "
        "audit) instead of its FLYT_TOPIC_* setting; repeatable. A demo run on an external "
        "broker names its topics in its summary, under 'topics'.",
    )(f)


def settings_for(bootstrap: str | None) -> tuple[config.Settings, str]:
    """The settings (FLYT_* variables) and the broker to read: --bootstrap, else the
    setting; neither is a usage error."""
    try:
        s = config.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    server = bootstrap or s.bootstrap
    if not server:
        raise click.UsageError("name the broker: --bootstrap HOST:PORT or FLYT_BOOTSTRAP_SERVERS")
    return s, server


def with_topics(s: config.Settings, overrides: tuple[str, ...]) -> config.Topics:
    kinds = {f for f in asdict(s.topics)}
    changes: dict[str, str] = {}
    for item in overrides:
        kind, sep, name = item.partition("=")
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
        return parse_when(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
