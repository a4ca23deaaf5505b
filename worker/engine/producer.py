"""The engine's producer on a real broker, through aiokafka's public API: one per worker
(`acks=all`, idempotent where the broker allows), writing a stage's outputs as whole
batches per partition (`send_many`), and renewed after a refusal that leaves an idempotent
producer's sequence numbers out of line."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner, murmur2

from worker import logs
from worker.engine.records import Output
from worker.kafka_clients.client_args import client_args
from worker.kafka_clients.connection import Bootstrap

log = logs.get("worker.engine")

# The broker (or the producer, before sending) will never take these records.
UNWRITABLE: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidMessageError,
)


class CachingPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as Apache Kafka's Java client
    places it), with each key's hash remembered: outputs are keyed by tenant (a few
    hundred keys), and the pure-Python murmur2 cost ~3 µs a record."""

    def __init__(self, size: int = 65_536) -> None:
        self._hash = functools.lru_cache(maxsize=size)(murmur2)

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return DefaultPartitioner()(key, all_partitions, available)  # type: ignore[no-any-return]
        index = (self._hash(key) & 0x7FFFFFFF) % len(all_partitions)
        return all_partitions[index]


# A partition's records per produce request. aiokafka sends one request at a time to
# a broker, each with one batch per partition: its default (16 KB, a dozen submissions)
# made the worker's writes many small requests. 64 KB cost the same CPU per event as
# 256 KB in the bench (61-62 µs, both brokers) and holds less in memory.
BATCH_BYTES = 64 * 1024
# A record larger than this is sent alone: a batch of it and others could exceed what a
# topic takes (the broker's default is about 1 MB a batch) though each record fits.
ALONE_BYTES = 64 * 1024


class KafkaProducer:
    unwritable = UNWRITABLE

    def __init__(
        self,
        bootstrap: Bootstrap,
        *,
        idempotent: bool,
        max_request_size: int,
        linger_ms: int = 2,
        one_record_batches: bool = False,
    ) -> None:
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = CachingPartitioner()  # send()'s and send_many()'s, one cache
        self._retired: set[asyncio.Future[None]] = set()  # producers stopping (`_renew`)
        self._args: dict[str, Any] = {
            **client_args(bootstrap),
            "acks": "all",  # with min.insync.replicas, a lost broker loses nothing
            "enable_idempotence": idempotent,  # a retried send is written once
            "linger_ms": linger_ms,
            "max_request_size": max_request_size,
            "partitioner": self._partitioner,
            "max_batch_size": BATCH_BYTES,
        }
        if one_record_batches:
            self._args["max_batch_size"] = 1

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**self._args)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        for retired in self._retired:
            with contextlib.suppress(Exception):
                await retired

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[Any]:
        if self._producer is None:
            raise RuntimeError("producer not started")
        future: asyncio.Future[Any] = await self._producer.send(
            topic,
            value=value,
            key=key,
            headers=headers,
            partition=partition,
            timestamp_ms=timestamp_ms,
        )
        return future

    async def send_many(self, outputs: Sequence[Output]) -> list[BaseException | None]:
        """Write `outputs`, in order; returns when the broker has answered for each: its
        error, or None. A partition's outputs go as whole batches (aiokafka's public
        `create_batch`/`send_batch`): no future, partitioner call or metadata wait per
        record, which cost the worker about as much as its rules (issue 20). A record too
        large to share a batch goes alone, in its place in the partition's order; a batch
        the broker refuses as too large is sent again record by record, so that only a
        record that is itself too large is unwritable."""
        if self._producer is None:
            raise RuntimeError("producer not started")
        producer = self._producer
        sent: list[tuple[list[int], int, asyncio.Future[Any] | BaseException]] = []
        open_batches: dict[tuple[str, int], tuple[Any, list[int]]] = {}
        partitions: dict[str, list[int] | BaseException] = {}

        async def send_batch(lane: tuple[str, int]) -> None:
            builder, indices = open_batches.pop(lane)
            try:
                future = await producer.send_batch(builder, lane[0], partition=lane[1])
            except Exception as exc:  # e.g. no metadata: the broker is unreachable
                sent.append((indices, lane[1], exc))
            else:
                sent.append((indices, lane[1], future))

        for i, out in enumerate(outputs):
            partition = out.partition
            if partition is None:
                every = partitions.get(out.topic)
                if every is None:
                    try:
                        every = sorted(await producer.partitions_for(out.topic))
                    except Exception as exc:  # no metadata: the broker is unreachable
                        every = exc
                    partitions[out.topic] = every
                if isinstance(every, BaseException):
                    sent.append(([i], -1, every))  # its outcome: retried by the caller
                    continue
                partition = self._partitioner(out.key, every, every)
            lane = (out.topic, partition)
            if out.size() > ALONE_BYTES:
                if lane in open_batches:
                    await send_batch(lane)
                sent.append(([i], partition, await self._send_one(out, partition)))
                continue
            while True:
                if lane not in open_batches:
                    open_batches[lane] = (producer.create_batch(), [])
                builder, indices = open_batches[lane]
                added = builder.append(
                    timestamp=None, key=out.key, value=out.value, headers=out.headers or []
                )
                if added is not None:
                    indices.append(i)
                    break
                await send_batch(lane)  # full (a batch takes its first record always)
        for lane in list(open_batches):
            await send_batch(lane)

        errors: list[BaseException | None] = [None] * len(outputs)
        alone: list[tuple[list[int], int]] = []
        refused = False
        for indices, partition, future in sent:
            error = await _outcome(future)
            if error is None:
                continue
            refused = refused or isinstance(error, UNWRITABLE)
            if isinstance(error, UNWRITABLE) and len(indices) > 1:
                alone.append((indices, partition))  # which of them is too large?
                continue
            for i in indices:
                errors[i] = error
        if refused:
            await self._renew(producer)
        for indices, partition in alone:
            for i in indices:  # one at a time: a refusal renews before the next
                used = self._producer
                errors[i] = error = await _outcome(await self._send_one(outputs[i], partition))
                if isinstance(error, UNWRITABLE):
                    await self._renew(used)
        return errors

    async def _renew(self, failed: AIOKafkaProducer | None) -> None:
        """After the broker refused a batch, an idempotent producer's sequence numbers for
        its partition no longer line up: every later batch there would fail
        (OutOfOrderSequenceNumber) for as long as the producer lives. Apache Kafka's Java
        client resets them; aiokafka does not, so a new producer (a new producer id)
        takes over, and what the old one still held fails, to be written again. (aiokafka
        refuses a record over `max_request_size` before sending it: only a topic whose
        own limit is lower makes the broker refuse one.)"""
        if not self._args["enable_idempotence"] or failed is not self._producer:
            return  # no sequence numbers, or renewed already by another caller
        assert failed is not None
        fresh = AIOKafkaProducer(**self._args)
        try:
            await fresh.start()
        except Exception as exc:  # the broker is away: the next refusal tries again
            log.warning("producer_renewal_failed", error=repr(exc))
            with contextlib.suppress(Exception):
                await fresh.stop()
            return
        self._producer = fresh
        log.warning("producer_renewed", reason="the broker refused a record as too large")
        self._retired.add(asyncio.ensure_future(failed.stop()))

    async def _send_one(self, out: Output, partition: int) -> asyncio.Future[Any] | BaseException:
        try:
            return await self.send(out.topic, out.key, out.value, out.headers, partition)
        except Exception as exc:  # e.g. larger than the producer sends at all
            return exc


async def _outcome(future: asyncio.Future[Any] | BaseException) -> BaseException | None:
    if isinstance(future, BaseException):
        return future
    try:
        await future
    except Exception as exc:
        return exc
    return None
