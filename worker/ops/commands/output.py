"""What every operator command answers the same way: exit codes, one line for broker and
topic trouble, table cells, JSON lines, and the log an audited command writes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from worker import config
from worker.ops.errors import BrokerUnavailable, TopicMissing
from worker.ops.safe_text import escape

EXIT_FAILED = 1
EXIT_NOTHING = 3
EXIT_REFUSED = 4

EXIT_CODES = """\b
Exit codes: 0 done; 1 failed (broker unreachable, topic missing, unreadable file);
2 bad usage; 3 nothing found (no record matches); 4 refused (missing role, replay
limit reached, a draft the worker would refuse)."""


class NothingFound(click.ClickException):
    exit_code = EXIT_NOTHING


class RefusedExit(click.ClickException):
    exit_code = EXIT_REFUSED


@contextmanager
def failures() -> Iterator[None]:
    """Broker and topic trouble as one line for the operator, never a traceback."""
    try:
        yield
    except (BrokerUnavailable, TopicMissing) as exc:
        raise click.ClickException(str(exc)) from None


def cell(value: object, width: int) -> str:
    text = escape(str(value if value is not None else "-"))
    return text if len(text) <= width else text[: width - 1] + "…"


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, default=str))


def audit_logging(s: config.Settings) -> None:
    """Before an audited command writes: its `operator_action` line goes to standard error
    as JSON, as the worker's logs do."""
    from worker import logs

    logs.configure(s.log_level)
    # kafka-python's connection chatter is not what an operator reads here.
    logging.getLogger("kafka").setLevel(logging.WARNING)
