"""The engine's producer writes a stage's outputs as whole batches per partition
(`worker/engine/producer.py`, `send_many`), on both real brokers: every output arrives, in its
partition's order, where the key's partitioner (or its explicit partition) puts it; a
record too large to share a batch goes alone in its place; and a batch the broker
refuses as too large costs only the record that is too large by itself."""

from __future__ import annotations

import secrets

import pytest

from tests.brokers import Broker
from worker.engine.kafka import KafkaReader
from worker.engine.producer import (
    ALONE_BYTES,
    UNWRITABLE,
    CachingPartitioner,
    KafkaProducer,
)
from worker.engine.records import Output, TopicPartition
from worker.engine.topics import TopicSpec, ensure_topics

PARTITIONS = 3


async def _written(bootstrap: str, topic: str, expected: int) -> dict[int, list[bytes]]:
    reader = KafkaReader(bootstrap)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        reader.assign(tps)
        for tp, first in (await reader.beginning_offsets(tps)).items():
            reader.seek(tp, first)
        found: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
        for _ in range(100):
            for tp, records in (await reader.poll(0.5)).items():
                found[tp.partition] += [r.value or b"" for r in records]
            if sum(map(len, found.values())) >= expected:
                break
        return found
    finally:
        await reader.stop()


async def _producer(broker: Broker) -> KafkaProducer:
    producer = KafkaProducer(
        broker.bootstrap,
        idempotent=broker.settings().profile().idempotent_producers,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    return producer


async def test_outputs_arrive_in_partition_order_with_a_large_one_in_its_place(
    broker: Broker,
) -> None:
    topic = f"test.send-many.{secrets.token_hex(4)}"
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, PARTITIONS, {})])
    keys = [f"tenant-{i % 7}".encode() for i in range(600)]
    outputs = [Output(topic, key, b"%d" % i) for i, key in enumerate(keys)]
    large = b"L" * (ALONE_BYTES + 1)
    outputs.insert(300, Output(topic, keys[299], large))  # beside its key's neighbours
    outputs.append(Output(topic, None, b"explicit", partition=2))
    producer = await _producer(broker)
    try:
        errors = await producer.send_many(outputs)
    finally:
        await producer.stop()
    assert errors == [None] * len(outputs)

    place = CachingPartitioner()
    expected: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    for out in outputs:
        p = out.partition
        if p is None:
            p = place(out.key, list(range(PARTITIONS)), list(range(PARTITIONS)))
        expected[p].append(out.value or b"")
    assert await _written(broker.bootstrap, topic, len(outputs)) == expected


async def test_a_refused_batch_costs_only_the_record_that_is_too_large(broker: Broker) -> None:
    if broker.kind == "tansu":
        pytest.skip("Tansu does not enforce max.message.bytes")
    topic = f"test.send-many-limit.{secrets.token_hex(4)}"
    # Batches of small records exceed it; each small record alone fits.
    limit = 20_000
    await ensure_topics(
        broker.bootstrap, [TopicSpec(topic, PARTITIONS, {"max.message.bytes": str(limit)})]
    )
    small = [Output(topic, None, b"s%d-" % i + b"x" * 4_000, partition=0) for i in range(8)]
    too_large = Output(topic, None, b"T" * 30_000, partition=0)
    outputs = [*small[:4], too_large, *small[4:]]
    producer = await _producer(broker)
    try:
        errors = await producer.send_many(outputs)
    finally:
        await producer.stop()
    assert [e is None for e in errors] == [True] * 4 + [False] + [True] * 4
    assert isinstance(errors[4], UNWRITABLE)
    written = await _written(broker.bootstrap, topic, len(small))
    assert sorted(written[0]) == sorted(out.value or b"" for out in small)


async def test_after_a_refusal_the_partition_takes_records_again(broker: Broker) -> None:
    """A record the broker refused leaves the partition writable for the outputs after it
    (the test above: also for those already on their way behind it)."""
    if broker.kind == "tansu":
        pytest.skip("Tansu does not enforce max.message.bytes")
    topic = f"test.send-many-after.{secrets.token_hex(4)}"
    await ensure_topics(
        broker.bootstrap, [TopicSpec(topic, PARTITIONS, {"max.message.bytes": "20000"})]
    )
    producer = await _producer(broker)
    try:
        first = await producer.send_many([Output(topic, None, b"T" * 30_000, partition=1)])
        later = await producer.send_many(
            [Output(topic, None, b"after-%d" % i, partition=1) for i in range(3)]
        )
    finally:
        await producer.stop()
    assert isinstance(first[0], UNWRITABLE)
    assert later == [None, None, None]
    written = await _written(broker.bootstrap, topic, 3)
    assert written[1] == [b"after-0", b"after-1", b"after-2"]
