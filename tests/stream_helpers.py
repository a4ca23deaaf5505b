"""Helpers for the integration tests: unique topics per test, worker processes, outcomes."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.brokers import Broker
from tests.processes import subprocess_env
from worker.config import Settings, Topics, topic_variables
from worker.demo.chaos import expected_outcomes as expected_outcomes  # for the stream tests
from worker.demo.watcher import OutcomeWatcher
from worker.devenv.feed import publish, snapshot_records
from worker.engine.topics import ensure_topics
from worker.pipeline.topics import topic_specs


def unique_settings(broker: Broker, name: str, **overrides: Any) -> Settings:
    run = f"{name}-{secrets.token_hex(3)}"
    t = Topics()
    topics = Topics(
        **{
            f: f"{getattr(t, f)}.{run}"
            for f in asdict(t)  # every topic, the audit trail and the pauses by hand too
        }
    )
    return broker.settings(app_id=f"flyt-xledger-test-{run}", topics=topics, **overrides)


async def prepare(s: Settings, snapshots: list[dict[str, Any]]) -> None:
    assert s.bootstrap
    await ensure_topics(s.bootstrap, topic_specs(s))
    await publish(s.bootstrap, s.topics.registers, snapshot_records(snapshots))


def worker_env(
    broker: Broker, s: Settings, tokens: dict[str, str], sandbox_url: str, metrics_port: int
) -> dict[str, str]:
    env = {
        **broker.env(),
        **tokens,
        "FLYT_APP_ID": s.app_id,
        "FLYT_SANDBOX": "1",
        "FLYT_XLEDGER_ENDPOINT": sandbox_url,
        "FLYT_METRICS_PORT": str(metrics_port),
        "FLYT_PARTITIONS": str(s.partitions),
        "FLYT_POST_BATCH_WINDOW_S": str(s.post_batch_window_s),
        # The test's sandbox stores a request before it answers (or a test's fault says
        # when): a settle time of one request deadline is enough, and keeps the takeover
        # after a kill short. Tests of the settle time itself set their own.
        "FLYT_XLEDGER_SETTLE_S": "15",
    }
    env.update(topic_variables(s.topics))
    return subprocess_env(env)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=2)).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v
        for (n, lbls), v in samples.items()
        if n == name and all(dict(lbls).get(k) == val for k, val in labels.items())
    )


async def watch_until(
    watcher: OutcomeWatcher, expected: set[tuple[str, str]], quiet_s: float, cap_s: float = 600
) -> None:
    """Until every expected payment has an outcome. Fails when no new outcome has come for
    `quiet_s` (the worker stalled: issue 14's symptom), not merely because a loaded machine
    is slow; `cap_s` bounds the whole wait. On failure, say why: the payments without an
    outcome, where their event and submissions sit, and the worker group's committed and
    end offsets now and when the wait began (did it still consume?)."""
    from worker.engine.lag import group_positions

    t = watcher.s.topics
    topics = [t.payments, t.submissions]
    try:
        before = await group_positions(watcher.bootstrap, watcher.s.app_id, topics)
    except Exception as exc:
        before = [f"unavailable: {exc!r}"]  # type: ignore[list-item]

    started = time.monotonic()
    quiet_since, seen = started, -1
    while True:
        await watcher.poll()
        have = len(expected & (watcher.posted | watcher.rejected))
        if have == len(expected):
            return
        now = time.monotonic()
        if have > seen:
            quiet_since, seen = now, have
        if now - quiet_since >= quiet_s or now - started >= cap_s:
            break
        await asyncio.sleep(0.05)
    report = await watcher.explain(expected)
    start = "\n".join(f"  {p}" for p in before)
    raise AssertionError(
        f"timed out waiting for {len(expected)} outcomes: {have} after "
        f"{now - started:.0f} s, none new for the last {now - quiet_since:.0f} s\n"
        f"{report}\nwhen the wait began:\n{start}"
    )
