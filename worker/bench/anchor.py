"""The bench's anchor: how fast plain aiokafka moves the same events through a broker.

consume → json.loads → json.dumps → produce, with the commit rule in its simplest form
(a batch's outputs acknowledged by the broker before the next batch), and producer
settings like the engine's output producer (acks=all, linger 2 ms), and aiokafka's plain
`send` per record, as any consumer-producer would. Two of them: with aiokafka's default
batch size (the anchor issue 18 and 20 measured against), and with the engine's (the
stricter one: the same write path the worker has, minus the worker). Plain aiokafka on
purpose (the one module outside the engine that imports it, named in the import-linter
contract); its connection settings come from `worker.kafka_clients`, as every client's.
"""

from __future__ import annotations

import json
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from worker.engine.producer import BATCH_BYTES
from worker.kafka_clients import Bootstrap, client_args


async def passthrough(
    bootstrap: Bootstrap, source: str, sink: str, partitions: int, n: int, engine_batches: bool
) -> tuple[float, float]:
    """Events per second over the first `n` records of `source` (already published), and
    this process's CPU microseconds per event (a figure that holds up under load);
    `engine_batches`: with the engine's producer batch size, else aiokafka's default."""
    consumer = AIOKafkaConsumer(**client_args(bootstrap), group_id=None, enable_auto_commit=False)
    batches = {"max_batch_size": BATCH_BYTES} if engine_batches else {}
    producer = AIOKafkaProducer(**client_args(bootstrap), acks="all", linger_ms=2, **batches)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(source, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        first: float | None = None
        cpu = 0.0
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
