"""What flows through the engine: input records, outputs to write, and state changes.

Plain data with no client types in it, so stages and the memory backend need no Kafka
client to speak the engine's language. Named tuples: the engine makes a few of these per
payment, and a tuple is built several times faster than a frozen dataclass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

Headers = tuple[tuple[str, bytes], ...]


class TopicPartition(NamedTuple):
    """A partition of a topic (equal to aiokafka's own TopicPartition, a NamedTuple too)."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}"


class Record(NamedTuple):
    """One input record, as read from a partition."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        """The last value of header `name`, or None."""
        found = None
        for k, v in self.headers:
            if k == name:
                found = v
        return found

    def position(self) -> str:
        """Where the record sits: `topic/partition@offset` (logs, DLQ context)."""
        return f"{self.topic}/{self.partition}@{self.offset}"


class Output(NamedTuple):
    """One record to write. An input is done only when all its outputs are on the broker."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    # The input this output is derived from: dead-lettered in its place if the output can
    # never be written (too large). None for outputs that are dead letters themselves.
    source: Record | None = None
    # None: the producer's partitioner places it by key. Set for records that must reach
    # the owner of a given partition (state of that partition, work for its owner).
    partition: int | None = None

    def size(self) -> int:
        return (
            len(self.key or b"")
            + len(self.value or b"")
            + sum(len(k) + len(v) for k, v in self.headers or ())
        )


class StateChange(NamedTuple):
    """A change to a partition's state store: `value` None deletes the key. Written only
    after every output of its batch is on the broker, and dropped if `source`'s output
    was dead-lettered instead (the input did not get its outcome)."""

    store: str
    partition: int
    key: str
    value: Any
    source: Record | None = None
