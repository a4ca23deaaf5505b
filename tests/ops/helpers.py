"""Helpers for the operator-tool tests: unique topics (the audit topic too), the CLI as
operators run it (a subprocess, settings from FLYT_* variables), and what a topic holds."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from tests.brokers import Broker
from tests.processes import subprocess_env
from tests.stream_helpers import unique_settings
from worker.config import Settings, topic_variables
from worker.contracts import PaymentStatusEvent, RegisterSnapshot
from worker.core import Rejected, evaluate
from worker.core.register_index import RegisterIndex
from worker.devenv.feed import producer
from worker.ops.topic_reader import Record, read_topics


def ops_settings(broker: Broker, name: str, **overrides: Any) -> Settings:
    """Settings with every topic of the test's own (the audit trail and the pauses too)."""
    return unique_settings(broker, name, **overrides)


def env(broker: Broker, s: Settings, **extra: str) -> dict[str, str]:
    return subprocess_env(
        {"FLYT_BOOTSTRAP_SERVERS": broker.bootstrap, **topic_variables(s.topics), **extra}
    )


def cli(
    broker: Broker, s: Settings, *args: str, stdin: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(broker, s, **extra),
        input=stdin,
    )


async def acli(
    broker: Broker, s: Settings, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    """The CLI from a test whose event loop runs a pipeline: it must not block the loop."""
    return await asyncio.to_thread(lambda: cli(broker, s, *args, **extra))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def records(broker: Broker, *topics: str) -> dict[str, list[Record]]:
    return read_topics(broker.bootstrap, list(topics), optional=list(topics))


async def send(
    broker: Broker,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
    timestamp_ms: int | None = None,
) -> tuple[int, int]:
    """One record, acknowledged; returns its (partition, offset)."""
    p = producer(broker.bootstrap)
    await p.start()
    try:
        meta = await (
            await p.send(topic, key=key, value=value, headers=headers, timestamp_ms=timestamp_ms)
        )
        return meta.partition, meta.offset
    finally:
        await p.stop()


def rejection_of(event: dict[str, Any], snapshot: dict[str, Any] | None) -> bytes:
    """The Rejection the worker would publish for `event` (the core's own decision)."""
    index = RegisterIndex(RegisterSnapshot.model_validate(snapshot)) if snapshot else None
    parsed = PaymentStatusEvent.model_validate(event)
    result = evaluate(parsed, index)
    assert isinstance(result, Rejected), "the event was meant to be rejected"
    return result.rejection(parsed, datetime.now(UTC)).model_dump_json().encode()
