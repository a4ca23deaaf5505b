"""Structured logs (structlog): short snake_case events with ids as context; JSON in
production, rendered for people on a terminal. aiokafka's and httpx's own lines
(standard logging) take the same way, so a log holds one format.

A last processor masks every registered secret, so that a token can never reach a log
line even by mistake (R5); the code does not log tokens in the first place.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRETS: set[str] = set()
# The secrets longest first (a secret that contains another is masked whole), and the
# shortest one's length: kept as secrets come, not worked out per text (with 356 tenants'
# tokens, sorting them for every string of every log line was 4 % of the worker's CPU at
# the month start).
_LONGEST_FIRST: tuple[str, ...] = ()
_SHORTEST = 0


def register_secret(value: str) -> None:
    global _LONGEST_FIRST, _SHORTEST
    if len(value) >= 6 and value not in _SECRETS:  # shorter would mask ordinary words
        _SECRETS.add(value)
        _LONGEST_FIRST = tuple(sorted(_SECRETS, key=len, reverse=True))
        _SHORTEST = len(_LONGEST_FIRST[-1])


def mask(text: str) -> str:
    """`text` with every registered secret replaced by `***`: the one place a text that
    leaves the process (a log line, a rejection's or dead letter's message, an exception's
    words) loses any token it carries."""
    if len(text) < _SHORTEST:  # no secret fits in it (most log values: ids, names)
        return text
    for secret in _LONGEST_FIRST:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask(v) for v in value)
    return value


def mask_secrets(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return _mask(event) if _SECRETS else event


def configure(level: str = "INFO", stream: Any = None, fmt: str | None = None) -> None:
    """Every log line through structlog, the libraries' (standard logging) too.

    `fmt`: "json" (production) or "console" (for people: structlog's console renderer);
    default FLYT_LOG_FORMAT, else console on a terminal and JSON elsewhere.
    """
    stream = stream or sys.stderr
    fmt = fmt or os.environ.get("FLYT_LOG_FORMAT") or ("console" if _isatty(stream) else "json")
    if fmt not in FORMATS:
        raise ValueError(
            f"log format {fmt!r} (FLYT_LOG_FORMAT) must be one of {', '.join(FORMATS)}"
        )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=_isatty(stream), exception_formatter=structlog.dev.plain_traceback
        )
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before masking, so a token in one is masked too.
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
    )
    global _HANDLER
    root = logging.getLogger()
    if _HANDLER is not None:  # configured again: replace ours, keep anyone else's
        root.removeHandler(_HANDLER)
    _HANDLER = logging.StreamHandler(stream)
    _HANDLER.setFormatter(formatter)
    root.addHandler(_HANDLER)
    root.setLevel(level)
    # A line per HTTP request and per group-protocol step is noise at INFO, and a cost on
    # the hot path (the engine logs its own hand-overs); warnings still come through.
    for chatty in ("httpx", "aiokafka"):
        logging.getLogger(chatty).setLevel(level if root.level <= logging.DEBUG else "WARNING")
    structlog.configure(
        # Masked here too: another handler (pytest's, say) sees the event before ours does.
        processors=[*shared, mask_secrets, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


FORMATS = ("json", "console")
_HANDLER: logging.Handler | None = None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def get(name: str = "worker") -> Any:
    return structlog.get_logger(name)
