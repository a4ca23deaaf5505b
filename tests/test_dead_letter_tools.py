"""Operators inspect and replay the DLQ (`python -m worker dlq …`), on a real broker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.conftest import Broker
from tests.stream_helpers import unique_settings
from worker.stream.dead_letters import dlq_headers
from worker.stream.feed import producer
from worker.stream.topics import ensure_topics, topic_specs

pytestmark = pytest.mark.integration


def cli(broker: Broker, s, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"FLYT_TOPIC_DLQ": s.topics.dlq, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "worker", "dlq", *args, "--bootstrap", broker.bootstrap],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def test_list_shows_why_and_replay_needs_okonomi_and_marks_the_record(
    broker: Broker,
) -> None:
    s = unique_settings(broker, "dlq")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    original = b'{"schema_version": 1, "tenant_id": "t-lillevik", "payment_id": "P-9"}'
    headers = dlq_headers(
        [("trace-id", b"abc")],
        reason="unknown_outcome",
        error_class="XledgerError",
        error_message="post failed 8 times: HTTP 502",
        stage="post",
        topic=s.topics.submissions,
        partition=2,
        offset=41,
        attempts=8,
    )
    p = producer(broker.bootstrap)
    await p.start()
    await (await p.send(s.topics.dlq, key=b"t-lillevik", value=original, headers=headers))
    await p.stop()

    listed = cli(broker, s, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert letter["stage"] == "post" and letter["reason"] == "unknown_outcome"
    assert letter["original"] == f"{s.topics.submissions}/2@41"
    where = f"{letter['dlq_partition']}@{letter['dlq_offset']}"

    refused = cli(broker, s, "replay", "--at", where, "--actor", "u-9", "--role", "Innstillinger")
    assert refused.returncode != 0 and "Økonomi" in refused.stderr
    assert "Traceback" not in refused.stderr

    done = cli(broker, s, "replay", "--at", where, "--actor", "u-17", "--role", "Økonomi")
    assert done.returncode == 0, done.stderr

    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    tps = [TopicPartition(s.topics.submissions, i) for i in range(s.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    records = []
    for _ in range(20):
        for batch in (await consumer.getmany(timeout_ms=250)).values():
            records.extend(batch)
        if records:
            break
    await consumer.stop()
    [record] = records
    assert record.value == original and record.key == b"t-lillevik"
    got = dict(record.headers)
    assert got["trace-id"] == b"abc"  # the original headers travel unchanged
    assert got["dlq.replay_count"] == b"1" and got["dlq.replayed_by"] == b"u-17"
