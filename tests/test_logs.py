"""Logs through structlog (`worker/logs.py`): the libraries' lines too, JSON to a pipe and
lines for people to a terminal, and no token in any line."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog

from worker import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
    logs._HANDLER = None


def test_aiokafka_s_own_lines_are_json_like_the_worker_s(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("INFO", stream=stream, fmt="json")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("group chatter")  # quieted
    logging.getLogger("aiokafka.consumer.group_coordinator").warning("Heartbeat failed")
    logs.get("worker.engine").info("partitions_assigned", partitions=["p:0"])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "Heartbeat failed"
    assert first["logger"] == "aiokafka.consumer.group_coordinator"
    assert first["level"] == "warning"
    assert second["event"] == "partitions_assigned" and second["partitions"] == ["p:0"]
    assert "timestamp" in first and "timestamp" in second


def test_no_token_in_any_line_the_libraries_and_tracebacks_included(
    restore_logging: None,
) -> None:
    token = "tok-3f9a77c2e1d04b"
    logs.register_secret(token)
    stream = io.StringIO()
    logs.configure("DEBUG", stream=stream, fmt="json")
    logging.getLogger("aiokafka").warning("header was %s", token)
    try:
        raise RuntimeError(f"refused {token}")
    except RuntimeError:
        logging.getLogger("httpx").exception("crashed")
        logs.get().exception("post_batch_crashed", error=f"x {token}")
    text = stream.getvalue()
    assert text.count("***") >= 4 and token not in text
    assert "Traceback" in text  # the traceback is there, masked


def test_a_terminal_gets_lines_for_people_and_a_pipe_gets_json(restore_logging: None) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    logs.configure("INFO", stream=terminal)
    logs.get("worker.demo").info("progress", submitted=12, rejected=3)
    line = re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue()).strip()  # colours off
    assert "progress" in line and "submitted=12" in line and "rejected=3" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    pipe = io.StringIO()
    logs.configure("INFO", stream=pipe)
    logs.get("worker.demo").info("progress", submitted=12)
    assert json.loads(pipe.getvalue())["submitted"] == 12


def test_the_log_format_can_be_chosen_and_a_wrong_one_is_refused(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYT_LOG_FORMAT", "console")
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    logs.get().info("worker_running", bootstrap="b:9092")
    assert "bootstrap=b:9092" in stream.getvalue()
    with pytest.raises(ValueError, match=r"\(FLYT_LOG_FORMAT\) must be one of json, console"):
        logs.configure("INFO", fmt="xml")


def test_every_secret_is_masked_the_longest_first_whatever_order_they_came_in() -> None:
    """`mask` keeps the secrets longest first and skips texts too short for any of them:
    a secret registered later, shorter than all before it, is still masked in a text too
    short for the others; one containing another is masked whole."""
    long_one, inner = "abcdef-0123456789-long-secret", "0123456789"
    logs.register_secret(long_one)
    logs.register_secret(inner)  # shorter than every secret before it
    assert logs.mask(f"x{inner}y") == "x***y"
    assert logs.mask(f"<{long_one}>") == "<***>"
    assert logs.mask("ok") == "ok"
