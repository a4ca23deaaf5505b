"""The anchor: how fast plain aiokafka moves the same events through this broker.

consume → json.loads → json.dumps → produce, with the worker's commit rule in its
simplest form (a batch's outputs acknowledged by the broker before the next batch), and
producer settings like the worker's output producer (acks=all, linger 2 ms).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from worker.config import Settings
from worker.core.register_book import RegisterBook
from worker.stream.delivery import Delivery
from worker.stream.enrich_stage import EnrichStage, PaymentStates


async def passthrough(
    bootstrap: str, source: str, sink: str, partitions: int, n: int
) -> tuple[float, float]:
    """Events per second over the first `n` records of `source` (already published), and
    this process's CPU microseconds per event (a figure that holds up under load)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(source, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        first: float | None = None
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            if first is None and batches:
                first = time.perf_counter()
                cpu = time.process_time()
            futures = []
            for records in batches.values():
                for r in records:
                    body = json.loads(r.value)
                    out = json.dumps(body, ensure_ascii=False).encode()
                    futures.append(await producer.send(sink, key=r.key, value=out))
                    seen += 1
            for f in futures:
                await f
        assert first is not None
        return n / (time.perf_counter() - first), (time.process_time() - cpu) / n * 1e6
    finally:
        await consumer.stop()
        await producer.stop()


async def aiokafka_enrich(
    bootstrap: str, source: str, sink: str, partitions: int, n: int, book: RegisterBook
) -> tuple[float, float]:
    """The prototype of issue 13's design change: the enrich stage's own `handle()` on a
    plain aiokafka loop (no faust), with the same commit rule (a batch's outputs are on
    the broker before its offsets count as done). Payment state is kept in memory here;
    the real thing would write it as one changelog record per batch, not per payment.
    Every output goes to `sink`. Returns events per second and CPU µs per event."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await consumer.start()
    await producer.start()
    try:
        s = Settings()
        s = replace(s, topics=replace(s.topics, submissions=sink, rejections=sink, dlq=sink))
        stage = EnrichStage(s, book, Delivery(producer).deliver, PaymentStates({}, {}))
        tps = [TopicPartition(source, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        first: float | None = None
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            if first is None and batches:
                first = time.perf_counter()
                cpu = time.process_time()
            for records in batches.values():
                await stage.handle([_Event(r) for r in records])
                seen += len(records)
        assert first is not None
        return n / (time.perf_counter() - first), (time.process_time() - cpu) / n * 1e6
    finally:
        await consumer.stop()
        await producer.stop()


class _Event:
    """What the stage reads of a faust event: its value and its message."""

    __slots__ = ("message", "value")

    def __init__(self, record: Any) -> None:
        self.value = record.value
        self.message = record
