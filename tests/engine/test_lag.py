"""The lag gauges' measure (`worker/engine/lag.py`) on a real broker: records behind the
group's commits and the age of the oldest of them."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from tests.brokers import Broker
from tests.stream_helpers import unique_settings
from worker.engine.lag import LagMonitor
from worker.engine.topics import ensure_topics
from worker.pipeline.topics import topic_specs


@pytest.mark.integration
async def test_lag_is_counted_from_the_group_s_commits_and_aged_by_the_oldest_record(
    broker: Broker,
) -> None:
    s = unique_settings(broker, "lag")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    topic = s.topics.payments
    base_ms = 1_700_000_000_000
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(5):  # partition 0: one record a second
            await producer.send_and_wait(topic, b"x", partition=0, timestamp_ms=base_ms + i * 1000)
        for i in range(2):  # partition 1: nothing committed by the group yet
            await producer.send_and_wait(topic, b"y", partition=1, timestamp_ms=base_ms + i * 500)
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=s.app_id, enable_auto_commit=False
    )
    await committer.start()
    try:  # the group has handled the first two records of partition 0
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "")})
    finally:
        await committer.stop()
    now = base_ms / 1000 + 100
    monitor = LagMonitor(broker.bootstrap, s.app_id, [topic], clock=lambda: now)
    await monitor.start()
    lags: dict[int, Any] = {}
    try:
        # A gauge refreshed every few seconds: on a topic just made, the broker may
        # answer an offsets request before it knows its new partitions' leaders (seen on
        # Apache Kafka under load); the next measure has them.
        for _ in range(10):
            lags = {p.partition: p for p in await monitor.measure()}
            if lags[0].records == 3 and lags[1].seconds > 0:
                break
            await asyncio.sleep(0.5)
    finally:
        await monitor.stop()
    assert (lags[0].records, lags[0].seconds) == (3, pytest.approx(98.0))  # record 2's age
    assert (lags[1].records, lags[1].seconds) == (2, pytest.approx(100.0))
    assert all((p.records, p.seconds) == (0, 0.0) for n, p in lags.items() if n > 1)


@pytest.mark.integration
async def test_measuring_keeps_nothing_of_what_it_fetched_beyond_the_record_it_ages(
    broker: Broker,
) -> None:
    """Issue 29: to age a lagging partition the monitor reads its first record; what the
    fetch brought beyond it (up to 1 MiB per partition on Kafka, ~5 MB on Tansu) was held
    until the next measure: at the month start, 11 partitions' worth (54 MB on Tansu)."""
    s = unique_settings(broker, "lagmem")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    topic = s.topics.payments
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        sent = [
            await producer.send(topic, bytes(1024) + str(i).encode(), partition=0)
            for i in range(4096)  # 4 MB behind the group, which has committed nothing
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    monitor = LagMonitor(broker.bootstrap, s.app_id, [topic])
    tracemalloc.start()
    try:
        await monitor.start()
        held_before = tracemalloc.get_traced_memory()[0]
        lags: dict[int, Any] = {}
        for _ in range(10):  # a new topic's leaders may take a measure or two to be known
            lags = {p.partition: p for p in await monitor.measure()}
            if lags[0].records == 4096 and lags[0].seconds > 0:
                break
            await asyncio.sleep(0.5)
        held = tracemalloc.get_traced_memory()[0] - held_before
    finally:
        tracemalloc.stop()
        await monitor.stop()
    assert lags[0].records == 4096 and lags[0].seconds > 0
    assert held < 512 * 1024, f"{held / 1024:.0f} KiB held after measuring"
