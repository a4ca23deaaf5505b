"""The DLQ's depth and oldest age per reason (issue 28), kept by a light reader in each
worker: read once, then followed; what retention deletes drops out; a reason whose last
dead letter is gone reads 0. On the memory backend, then on both real brokers."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import REGISTRY

from tests.brokers import Broker
from tests.ops.helpers import ops_settings, send
from tests.waiting import until_async
from worker.dead_letter_gauges import DeadLetterGauges
from worker.engine.memory import MemoryBackend, MemoryBroker
from worker.engine.topics import ensure_topics
from worker.ops.audit import fingerprint
from worker.pipeline.topics import topic_specs
from worker.pipeline.wiring import kafka_backend


def depth(reason: str) -> float | None:
    return REGISTRY.get_sample_value("flyt_dlq_records", {"reason": reason})


def oldest(reason: str) -> float | None:
    return REGISTRY.get_sample_value("flyt_dlq_oldest_age_seconds", {"reason": reason})


async def test_depth_and_age_follow_the_topic_and_its_retention() -> None:
    broker = MemoryBroker()
    broker.create_topic("dlq-mem", 2)
    for p, reason in ((0, b"auth-mem"), (0, b"auth-mem"), (1, b"invalid-mem"), (1, b"auth-mem")):
        broker.append("dlq-mem", b"k", b"v", [("dlq.reason", reason)], partition=p)
    gauges = DeadLetterGauges(
        MemoryBackend(broker), "dlq-mem", "audit-mem", interval_s=3600, trail_retry_s=0
    )
    await gauges.start()
    try:
        await gauges.ready.wait()
        await gauges.refresh(now_s=1000.0)  # the memory broker's records are at time 0
        assert (depth("auth-mem"), depth("invalid-mem")) == (3, 1)
        assert oldest("auth-mem") == 1000.0
        broker.append("dlq-mem", b"k", b"v", [], partition=0)  # no dlq.* headers

        async def followed() -> bool:
            await gauges.refresh(now_s=1000.0)
            return depth("unknown") == 1

        await until_async(followed, 5, "the new dead letter counted")
        broker.delete_before("dlq-mem", 0, 2)  # retention: both auth-mem letters of p0
        broker.delete_before("dlq-mem", 1, 1)  # and the invalid-mem one
        await gauges.refresh(now_s=1000.0)
        assert (depth("auth-mem"), depth("invalid-mem"), depth("unknown")) == (1, 0, 1)
        assert oldest("invalid-mem") == 0
        # `dlq replay` sent the one left back (the audit topic, made by the first replay):
        # it needs nobody any more.
        broker.create_topic("audit-mem", 1)
        replay = {
            "action": "dlq.replay",
            "items": [{"outcome": "sent", "fingerprint": fingerprint("", b"k", b"v")}],
        }
        broker.append("audit-mem", b"u-1", json.dumps(replay).encode(), partition=0)

        async def replayed() -> bool:
            await gauges.refresh(now_s=1000.0)
            return depth("auth-mem") == 0

        await until_async(replayed, 5, "the replayed dead letter no longer counted")
        assert depth("unknown") == 0  # the same bytes: the same fingerprint
    finally:
        await gauges.stop()


@pytest.mark.integration
async def test_gauges_read_a_real_dlq_whole_then_follow_it(broker: Broker) -> None:
    s = ops_settings(broker, "dlqgauge")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    now_ms = int(time.time() * 1000)
    reason = f"gauge-{s.app_id[-6:]}"
    for hours in (20, 3):
        await send(
            broker,
            s.topics.dlq,
            b"k",
            b"v",
            [("dlq.reason", reason.encode())],
            now_ms - hours * 3_600_000,
        )
    assert s.bootstrap
    gauges = DeadLetterGauges(kafka_backend(s, s.bootstrap), s.topics.dlq, s.topics.audit, 3600)
    await gauges.start()
    try:
        await until_async(gauges.ready.wait, 30, "the DLQ read once")
        await gauges.refresh(now_s=now_ms / 1000)
        assert depth(reason) == 2 and oldest(reason) == 20 * 3600
        await send(broker, s.topics.dlq, b"k", b"v", [("dlq.reason", reason.encode())], now_ms)

        async def three() -> bool:
            await gauges.refresh(now_s=now_ms / 1000)
            return depth(reason) == 3

        await until_async(three, 20, "the third dead letter followed")
    finally:
        await gauges.stop()
