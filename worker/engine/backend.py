"""What the engine needs of a broker, as two small interfaces: a group consumer and a
producer (plus a reader that belongs to no group). `kafka.py` implements them on
aiokafka; `memory.py` in process, for fast tests of the stages beside the real-broker
tests (as arroyo's local backend does)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.engine.records import Output, Record, TopicPartition


class Fenced(Exception):
    """The group has moved on: this member's generation is gone (a rebalance it missed,
    or a session that expired while it was stalled). It owns nothing until it rejoins."""


class PositionLost(Exception):
    """The next record to fetch of these partitions (partition → position) is no longer on
    the broker: retention deleted it, or the topic was made again. A group consumer never
    resets such a position by itself (that would skip records silently); it raises this
    from `poll`, and the engine says what was lost and seeks on."""

    def __init__(self, positions: dict[TopicPartition, int]) -> None:
        super().__init__(", ".join(f"{tp}@{o}" for tp, o in sorted(positions.items())))
        self.positions = positions


# What one fetch may bring, for every consumer of the engine (Kafka's default is 50 MiB):
# fetched bytes wait in the client until a stage takes their records, so a month start's
# backlog would sit in memory as whole fetch responses (160 MB of them at 356 tenants,
# tracemalloc).
FETCH_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class GroupSettings:
    group: str
    session_timeout_s: float
    heartbeat_interval_s: float
    rebalance_timeout_s: float
    # Topics dealt out together (assignment.py): partition p of each to the same member.
    copartitioned: tuple[tuple[str, ...], ...] = ()
    fetch_max_wait_ms: int = 100  # a floor under each hop's latency where nothing waits
    max_poll_records: int = 2000
    fetch_max_bytes: int = FETCH_MAX_BYTES
    max_partition_fetch_bytes: int = 1024 * 1024


class RebalanceListener(Protocol):
    async def on_revoked(self, partitions: set[TopicPartition]) -> None: ...
    async def on_assigned(self, partitions: set[TopicPartition]) -> None: ...


class GroupConsumer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...  # leaves the group
    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None: ...
    # Raises PositionLost for a position the broker no longer has (never resets it).
    async def poll(self, timeout_s: float) -> dict[TopicPartition, list[Record]]: ...
    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...  # Fenced
    async def committed(self, tp: TopicPartition) -> int | None: ...
    async def beginning_offsets(
        self, tps: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...
    def pause(self, tps: Iterable[TopicPartition]) -> None: ...
    def resume(self, tps: Iterable[TopicPartition]) -> None: ...
    # The partition's end as of the last fetch (no request; None before one).
    def highwater(self, tp: TopicPartition) -> int | None: ...


class Reader(Protocol):
    """Reads partitions it is given, outside any group (restores, the register cache)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def partitions(self, topic: str) -> list[int]: ...
    def assign(self, tps: Iterable[TopicPartition]) -> None: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...
    async def poll(self, timeout_s: float) -> dict[TopicPartition, list[Record]]: ...
    async def position(self, tp: TopicPartition) -> int: ...
    async def beginning_offsets(
        self, tps: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]: ...
    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]: ...


class Producer(Protocol):
    # The errors that say the broker will never take a record (too large): no retry helps.
    unwritable: tuple[type[BaseException], ...]

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    # Writes `outputs` in order, returns when the broker has answered for each: its
    # error, or None (a stage's outputs: the engine's hot path).
    async def send_many(self, outputs: Sequence[Output]) -> list[BaseException | None]: ...


class Backend(Protocol):
    def group_consumer(self, settings: GroupSettings) -> GroupConsumer: ...
    def reader(self) -> Reader: ...
    def producer(self) -> Producer: ...
