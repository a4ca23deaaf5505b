"""The engine's backend on a real broker (Apache Kafka or Tansu), through aiokafka's public
API: the group consumer, the reader outside the group, the producer, and the assignor."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTP
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import (
    CommitFailedError,
    CorruptRecordException,
    IllegalStateError,
    InvalidMessageError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner, murmur2

from worker import logs
from worker.engine import assignment
from worker.engine.backend import Fenced, GroupSettings, RebalanceListener
from worker.engine.records import Output, Record, TopicPartition

# The broker (or the producer, before sending) will never take these records.
UNWRITABLE: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidMessageError,
)
ASSIGNOR_NAME = "flyt-copartitioned"
log = logs.get("worker.engine")
BrokerError = KafkaError  # what a caller outside the engine may catch


def _records(batches: Mapping[Any, list[Any]]) -> dict[TopicPartition, list[Record]]:
    return {
        TopicPartition(tp.topic, tp.partition): [
            Record(
                r.topic,
                r.partition,
                r.offset,
                r.key,
                r.value,
                tuple(r.headers or ()),
                r.timestamp,
            )
            for r in records
        ]
        for tp, records in batches.items()
    }


async def topic_partitions(bootstrap: str, topic: str, tries: int = 100) -> list[int]:
    """The partition numbers of `topic`, asked of the cluster (metadata may lag a topic
    just created on Apache Kafka: asked again for up to `tries` × 0.1 s); [] if none."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(tries):
            for described in await admin.describe_topics([topic]):
                if described["error_code"] == 0 and described["partitions"]:
                    return sorted(p["partition"] for p in described["partitions"])
            await asyncio.sleep(0.1)
        return []
    finally:
        await admin.close()


def _aio(tps: Iterable[TopicPartition]) -> list[AioTP]:
    return [AioTP(tp.topic, tp.partition) for tp in tps]


def copartitioned_assignor(
    copartitioned: tuple[tuple[str, ...], ...],
) -> type[AbstractPartitionAssignor]:
    """aiokafka's assignor interface over `assignment.assign` (every member of a group must
    use the same one: it is chosen by name when the group forms)."""

    class CoPartitioned(AbstractPartitionAssignor):
        name = ASSIGNOR_NAME
        version = 0

        @classmethod
        def assign(
            cls, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
        ) -> dict[str, ConsumerProtocolMemberAssignment]:
            subscriptions = {m: list(meta.subscription) for m, meta in members.items()}
            counts: dict[str, int] = {}
            for topics in subscriptions.values():
                for t in topics:
                    known = cluster.partitions_for_topic(t)
                    if known:
                        counts[t] = max(known) + 1
            dealt = assignment.assign(subscriptions, counts, copartitioned)
            out = {}
            for member, tps in dealt.items():
                by_topic: dict[str, list[int]] = {}
                for tp in tps:
                    by_topic.setdefault(tp.topic, []).append(tp.partition)
                out[member] = ConsumerProtocolMemberAssignment(
                    cls.version, sorted((t, sorted(ps)) for t, ps in by_topic.items()), b""
                )
            return out

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

        @classmethod
        def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
            pass

    return CoPartitioned


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: RebalanceListener) -> None:
        self.listener = listener

    async def on_partitions_revoked(self, revoked: Iterable[AioTP]) -> None:
        await self.listener.on_revoked({TopicPartition(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Iterable[AioTP]) -> None:
        await self.listener.on_assigned({TopicPartition(tp.topic, tp.partition) for tp in assigned})


class _Consumer:
    """What the group consumer and the reader do alike on their aiokafka consumer."""

    _consumer: AIOKafkaConsumer | None = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return self._consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self, timeout_s: float) -> dict[TopicPartition, list[Record]]:
        return _records(await self.consumer.getmany(timeout_ms=int(timeout_s * 1000)))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(AioTP(tp.topic, tp.partition), offset)

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        got = await self.consumer.beginning_offsets(_aio(tps))
        return {TopicPartition(tp.topic, tp.partition): o for tp, o in got.items()}

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        got = await self.consumer.end_offsets(_aio(tps))
        return {TopicPartition(tp.topic, tp.partition): o for tp, o in got.items()}


class KafkaGroupConsumer(_Consumer):
    def __init__(self, bootstrap: str, settings: GroupSettings) -> None:
        self.bootstrap = bootstrap
        self.s = settings
        self._subscription: tuple[list[str], RebalanceListener] | None = None

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        self._subscription = (topics, listener)
        if self._consumer is not None:
            self._consumer.subscribe(topics, listener=_Listener(listener))

    async def start(self) -> None:
        s = self.s
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=s.group,
            enable_auto_commit=False,
            # A partition the group never committed is read from its first offset (the
            # engine seeks there itself; this covers a fetch before its seek).
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(s.rebalance_timeout_s * 1000),
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            max_poll_records=s.max_poll_records,
            partition_assignment_strategy=(copartitioned_assignor(s.copartitioned),),
        )
        await self._consumer.start()
        if self._subscription is not None:
            self.subscribe(*self._subscription)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(
                {AioTP(tp.topic, tp.partition): o for tp, o in offsets.items()}
            )
        except (CommitFailedError, IllegalStateError) as exc:
            raise Fenced(
                f"{type(exc).__name__}: the group has moved on, this member no longer holds "
                "the partitions"
            ) from None

    async def committed(self, tp: TopicPartition) -> int | None:
        offset: int | None = await self.consumer.committed(AioTP(tp.topic, tp.partition))
        return offset

    def pause(self, tps: Iterable[TopicPartition]) -> None:
        self.consumer.pause(*_aio(tps))

    def resume(self, tps: Iterable[TopicPartition]) -> None:
        self.consumer.resume(*_aio(tps))

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def highwater(self, tp: TopicPartition) -> int | None:
        end: int | None = self.consumer.highwater(AioTP(tp.topic, tp.partition))
        return end


class KafkaReader(_Consumer):
    """An assigned consumer in no group: it never moves a partition, commits nothing."""

    def __init__(self, bootstrap: str, fetch_max_wait_ms: int = 100) -> None:
        self.bootstrap = bootstrap
        self.fetch_max_wait_ms = fetch_max_wait_ms

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        await self._consumer.start()

    async def partitions(self, topic: str) -> list[int]:
        return await topic_partitions(self.bootstrap, topic)

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        self.consumer.assign(_aio(tps))

    async def position(self, tp: TopicPartition) -> int:
        position: int = await self.consumer.position(AioTP(tp.topic, tp.partition))
        return position


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
        bootstrap: str,
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
            "bootstrap_servers": bootstrap,
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
        partitions: dict[str, list[int]] = {}

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
                    every = sorted(await producer.partitions_for(out.topic))
                    partitions[out.topic] = every
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
        await fresh.start()
        self._producer = fresh
        log.warning("producer_renewed", reason="the broker refused a record as too large")
        self._retired.add(asyncio.ensure_future(failed.stop()))

    async def _send_one(self, out: Output, partition: int) -> asyncio.Future[Any] | BaseException:
        try:
            return await self.send(out.topic, out.key, out.value, out.headers, partition)
        except Exception as exc:  # e.g. larger than the producer sends at all
            return exc

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()


async def _outcome(future: asyncio.Future[Any] | BaseException) -> BaseException | None:
    if isinstance(future, BaseException):
        return future
    try:
        await future
    except Exception as exc:
        return exc
    return None


class KafkaBackend:
    def __init__(
        self,
        bootstrap: str,
        *,
        idempotent: bool,
        max_request_size: int,
        fetch_max_wait_ms: int = 100,
    ) -> None:
        self.bootstrap = bootstrap
        self.idempotent = idempotent
        self.max_request_size = max_request_size
        self.fetch_max_wait_ms = fetch_max_wait_ms

    def group_consumer(self, settings: GroupSettings) -> KafkaGroupConsumer:
        return KafkaGroupConsumer(self.bootstrap, settings)

    def reader(self) -> KafkaReader:
        return KafkaReader(self.bootstrap, self.fetch_max_wait_ms)

    def producer(self) -> KafkaProducer:
        return KafkaProducer(
            self.bootstrap, idempotent=self.idempotent, max_request_size=self.max_request_size
        )
