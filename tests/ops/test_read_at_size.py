"""Operators at production size (issue 28): a period is sought by time, not read from the
first offset. On Apache Kafka with 200,000 old dead letters and 50 from the last hour,
`dlq list --since 1h` fetches the 50 and nothing older, and prints them."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer

from tests.brokers import Broker
from tests.ops.helpers import cli, json_lines, ops_settings
from worker.config import Settings
from worker.engine.topics import ensure_topics
from worker.ops import dead_letter_queue as q
from worker.ops.topic_reader import ReadStats
from worker.ops.when import Period
from worker.pipeline.dead_letters import dlq_headers
from worker.pipeline.topics import topic_specs

pytestmark = pytest.mark.integration

OLD, RECENT = 200_000, 50
HOUR_MS = 3_600_000


def _headers(s: Settings, n: int) -> list[tuple[str, bytes]]:
    return dlq_headers(
        [],
        reason="unknown_outcome",
        error_class="Test",
        error_message="after retries",
        stage="post",
        topic=s.topics.submissions,
        partition=n % 4,
        offset=n,
    )


def _fill(s: Settings) -> None:
    """200,000 dead letters from two days to two hours ago, then 50 from the last 50 min:
    batched, each with its own time (the producer's timestamp_ms)."""
    producer = KafkaProducer(
        bootstrap_servers=s.bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1
    )
    try:
        now = int(time.time() * 1000)
        headers = _headers(s, 0)
        first = now - 48 * HOUR_MS
        step = 46 * HOUR_MS // OLD
        value = b'{"tenant_id":"t-old","payment_id":"P-old"}'  # never fetched: one will do
        for n in range(OLD):
            producer.send(s.topics.dlq, value=value, timestamp_ms=first + n * step)
        for n in range(RECENT):
            value = b'{"tenant_id":"t-new","payment_id":"R-%d"}' % n
            producer.send(
                s.topics.dlq,
                key=b"R-%d" % n,
                value=value,
                headers=headers,
                timestamp_ms=now - (RECENT - n) * 60_000,
            )
        producer.flush(60)
    finally:
        producer.close()


@pytest.mark.parametrize("broker", ["kafka"], indirect=True)
async def test_dlq_list_since_1h_fetches_only_the_last_hour_of_200_000_records(
    broker: Broker,
) -> None:
    s = ops_settings(broker, "atsize")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    await asyncio.to_thread(_fill, s)

    # The reader's own count of what the consumer handed over, in process.
    stats = ReadStats()
    since = Period(start=datetime.now(UTC) - timedelta(hours=1))
    chosen = await asyncio.to_thread(
        q.select, broker.bootstrap, s.topics.dlq, q.DlqFilter(period=since), None, stats=stats
    )
    assert chosen.matched == RECENT and stats.fetched[s.topics.dlq] == RECENT

    # As operators run it: every one of the 50 printed, and the command says what it read.
    out = await asyncio.to_thread(
        cli, broker, s, "dlq", "list", "--since", "1h", "--limit", "0", "--json"
    )
    assert out.returncode == 0, out.stderr
    rows = json_lines(out.stdout)
    assert sorted(r["payment_id"] for r in rows) == sorted(f"R-{n}" for n in range(RECENT))
    [read] = re.findall(r"read ([\d,]+) of " + re.escape(s.topics.dlq), out.stderr)
    assert int(read.replace(",", "")) == RECENT, out.stderr
    table = await asyncio.to_thread(cli, broker, s, "dlq", "list", "--since", "1h")
    assert table.returncode == 0 and f"{RECENT} of {RECENT} matching" in table.stdout
    assert json.dumps("t-old") not in out.stdout
