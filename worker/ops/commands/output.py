"""What every operator command answers the same way: exit codes, one line for broker and
topic trouble, table cells, JSON lines, and the log an audited command writes."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from worker import config
from worker.ops.errors import BrokerUnavailable, TopicMissing
from worker.ops.safe_text import escape

EXIT_FAILED = 1
EXIT_NOTHING = 3
EXIT_REFUSED = 4
EXIT_INCOMPLETE = 6

EXIT_CODES = """\b
Exit codes: 0 done; 1 failed (broker unreachable, topic missing, unreadable file, a read
that waited longer than --timeout); 2 bad usage; 3 nothing found (no record matches);
4 refused (missing role, replay limit reached, a draft the worker would refuse)."""


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


# Where the output is no terminal (a pipe, a file, `kubectl exec` without -t), COLUMNS or this.
NO_TERMINAL_WIDTH = 160
MIN_LAST = 20


def terminal_width() -> int:
    return shutil.get_terminal_size((NO_TERMINAL_WIDTH, 24)).columns


class Table:
    """Columns of fixed width (title, width, "<" or ">"), the last taking what is left of
    the terminal's width (at least MIN_LAST): a table fits the screen it is printed on."""

    def __init__(self, columns: Sequence[tuple[str, int, str]], width: int | None = None) -> None:
        self.columns = list(columns)
        fixed = sum(w + 1 for _, w, _ in self.columns[:-1])
        # One column short of the screen: a line exactly as wide wraps on some terminals.
        self.last = max(MIN_LAST, (width or terminal_width()) - fixed - 1)

    def _widths(self) -> list[int]:
        return [w for _, w, _ in self.columns[:-1]] + [self.last]

    def header(self) -> str:
        return self._line([title for title, _, _ in self.columns], cut=False)

    def row(self, *values: object) -> str:
        return self._line(list(values), cut=True)

    def _line(self, values: list[object], cut: bool) -> str:
        out = []
        for (_, _, align), width, value in zip(self.columns, self._widths(), values, strict=True):
            text = cell(value, width) if cut else str(value)
            out.append(f"{text:{align}{width}}")
        return " ".join(out).rstrip()


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, default=str))


def audit_logging(s: config.Settings) -> None:
    """Before an audited command writes: its `operator_action` line goes to standard error
    as JSON, as the worker's logs do."""
    from worker import logs

    logs.configure(s.log_level)
    # kafka-python's connection chatter is not what an operator reads here.
    logging.getLogger("kafka").setLevel(logging.WARNING)
