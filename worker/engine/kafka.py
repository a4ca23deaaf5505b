"""The engine's backend on a real broker (Apache Kafka or Tansu), through aiokafka's public
API: the group consumer, the reader outside the group, and the assignor; the producer is
`producer.py`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
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
    IllegalStateError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)

from worker.engine import assignment
from worker.engine.backend import (
    FETCH_MAX_BYTES,
    Fenced,
    GroupSettings,
    PositionLost,
    RebalanceListener,
)
from worker.engine.producer import KafkaProducer
from worker.engine.records import Record, TopicPartition
from worker.kafka_clients.client_args import client_args
from worker.kafka_clients.connection import Bootstrap

ASSIGNOR_NAME = "flyt-copartitioned"
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


async def topic_partitions(bootstrap: Bootstrap, topic: str, tries: int = 100) -> list[int]:
    """The partition numbers of `topic`, asked of the cluster (metadata may lag a topic
    just created on Apache Kafka: asked again for up to `tries` × 0.1 s); [] if none."""
    admin = AIOKafkaAdminClient(**client_args(bootstrap))
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
    def __init__(self, bootstrap: Bootstrap, settings: GroupSettings) -> None:
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
            **client_args(self.bootstrap),
            group_id=s.group,
            enable_auto_commit=False,
            # Never a reset by the client: a position the broker no longer has is the
            # engine's to report (PositionLost). The engine seeks every partition it is
            # assigned before it resumes it (a partition the group never committed: to its
            # first offset).
            auto_offset_reset="none",
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(s.rebalance_timeout_s * 1000),
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            max_poll_records=s.max_poll_records,
            fetch_max_bytes=s.fetch_max_bytes,
            max_partition_fetch_bytes=s.max_partition_fetch_bytes,
            partition_assignment_strategy=(copartitioned_assignor(s.copartitioned),),
        )
        await self._consumer.start()
        if self._subscription is not None:
            self.subscribe(*self._subscription)

    async def poll(self, timeout_s: float) -> dict[TopicPartition, list[Record]]:
        try:
            return await super().poll(timeout_s)
        except OffsetOutOfRangeError as exc:
            lost = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            raise PositionLost(
                {TopicPartition(tp.topic, tp.partition): o for tp, o in lost.items()}
            ) from None
        except NoOffsetForPartitionError:
            # A partition assigned and not yet seeked (it is paused until the engine has
            # restored its state and seeked it): nothing to read from it yet.
            return {}

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

    def highwater(self, tp: TopicPartition) -> int | None:
        end: int | None = self.consumer.highwater(AioTP(tp.topic, tp.partition))
        return end


class KafkaReader(_Consumer):
    """An assigned consumer in no group: it never moves a partition, commits nothing."""

    def __init__(self, bootstrap: Bootstrap, fetch_max_wait_ms: int = 100) -> None:
        self.bootstrap = bootstrap
        self.fetch_max_wait_ms = fetch_max_wait_ms

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **client_args(self.bootstrap),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            fetch_max_bytes=FETCH_MAX_BYTES,
        )
        await self._consumer.start()

    async def partitions(self, topic: str) -> list[int]:
        return await topic_partitions(self.bootstrap, topic)

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        self.consumer.assign(_aio(tps))

    async def position(self, tp: TopicPartition) -> int:
        position: int = await self.consumer.position(AioTP(tp.topic, tp.partition))
        return position


class KafkaBackend:
    def __init__(
        self,
        bootstrap: Bootstrap,
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
