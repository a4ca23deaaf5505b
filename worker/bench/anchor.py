"""The bench's anchors: how fast plain aiokafka moves the same events through a broker.

consume → json.loads → json.dumps → produce, with the commit rule in its simplest form
(a batch's outputs acknowledged by the broker before the next batch), and producer
settings like the engine's output producer (acks=all, linger 2 ms), and aiokafka's plain
`send` per record, as any consumer-producer would. Three of them:
- one hop with aiokafka's default batch size (the anchor issues 18 and 20 measured
  against), and with the engine's (the stricter one: the same write path the enrich
  stage has, minus the worker);
- two hops in one process (`two_hop`, issue 29): consume → produce → consume → produce,
  with one producer of the engine's batch size for both, as the whole worker runs its two
  stages over one producer: what the whole worker's CPU per event is set beside.
Plain aiokafka on purpose (the one module outside the engine that imports it, named in
the import-linter contract); its connection settings come from `worker.kafka_clients`, as
every client's.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from worker.engine.producer import BATCH_BYTES
from worker.kafka_clients.client_args import client_args
from worker.kafka_clients.connection import Bootstrap


@dataclass
class _Start:
    """When the first hop got its first records: wall clock and this process's CPU."""

    wall: float | None = None
    cpu: float = 0.0

    def mark(self) -> None:
        if self.wall is None:
            self.wall = time.perf_counter()
            self.cpu = time.process_time()


def _producer(bootstrap: Bootstrap, engine_batches: bool) -> AIOKafkaProducer:
    batches = {"max_batch_size": BATCH_BYTES} if engine_batches else {}
    return AIOKafkaProducer(**client_args(bootstrap), acks="all", linger_ms=2, **batches)


async def _consumer(bootstrap: Bootstrap, topic: str, partitions: int) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        **client_args(bootstrap),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # the second hop's topic is empty when it starts
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def _hop(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, sink: str, n: int, start: _Start
) -> None:
    """Moves n records from `consumer` to `sink`, a batch's sends acknowledged before the
    next batch is fetched."""
    seen = 0
    while seen < n:
        batches = await consumer.getmany(timeout_ms=1000, max_records=500)
        if batches:
            start.mark()
        futures = []
        for records in batches.values():
            for r in records:
                body = json.loads(r.value)
                out = json.dumps(body, ensure_ascii=False).encode()
                futures.append(await producer.send(sink, key=r.key, value=out))
                seen += 1
        for f in futures:
            await f


def _figures(start: _Start, n: int) -> tuple[float, float]:
    assert start.wall is not None
    wall = time.perf_counter() - start.wall
    return n / wall, (time.process_time() - start.cpu) / n * 1e6


async def passthrough(
    bootstrap: Bootstrap, source: str, sink: str, partitions: int, n: int, engine_batches: bool
) -> tuple[float, float]:
    """Events per second over the first `n` records of `source` (already published), and
    this process's CPU microseconds per event (a figure that holds up under load);
    `engine_batches`: with the engine's producer batch size, else aiokafka's default."""
    producer = _producer(bootstrap, engine_batches)
    await producer.start()
    try:
        consumer = await _consumer(bootstrap, source, partitions)
        try:
            start = _Start()
            await _hop(consumer, producer, sink, n, start)
            return _figures(start, n)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


async def two_hop(
    bootstrap: Bootstrap, source: str, middle: str, sink: str, partitions: int, n: int
) -> tuple[float, float]:
    """The two-hop anchor (issue 29): `source` → `middle` and `middle` → `sink` at once in
    one process, one producer with the engine's batch size for both hops (as the worker's
    two stages share its one producer). Events per second and this process's CPU µs per
    event, from the first hop's first records to the second hop's last acknowledgement:
    both hops' work, per event, like the whole worker's."""
    producer = _producer(bootstrap, engine_batches=True)
    await producer.start()
    consumers: list[AIOKafkaConsumer] = []
    try:
        consumers.append(await _consumer(bootstrap, source, partitions))
        consumers.append(await _consumer(bootstrap, middle, partitions))
        start = _Start()
        # The second hop's start must not count: the first hop's first records start both.
        await asyncio.gather(
            _hop(consumers[0], producer, middle, n, start),
            _hop(consumers[1], producer, sink, n, start),
        )
        return _figures(start, n)
    finally:
        for consumer in consumers:
            await consumer.stop()
        await producer.stop()
