"""Per-partition state: a map in memory, every change also a record on a compacted
changelog topic (same partition count as the input, written with an explicit partition).

A store of partition p is restored from changelog partition p before the first record of
p is processed, and lives only in the worker that holds p (engine.md, "Ownership").

Two kinds of store:
- per key (`batched=False`): one changelog record per key, a tombstone deletes it;
- batched (`batched=True`, for stores whose keys are never deleted, such as which
  payments were handled): a batch's changes go in one record under a key of its own,
  so a batch of 500 payments is one write, not 500. Compaction never drops such a
  record (no later record has its key), and a later write of the same key in any form
  wins on restore, because the changelog is replayed in offset order.

Values are JSON. A record whose value is empty bytes counts as a tombstone (Tansu
returns tombstones that way).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from worker.engine.records import Output, Record, TopicPartition

BATCH_PREFIX = "\x00batch:"  # never a store key: keys are payment references
MAX_BATCH_ENTRIES = 2000  # a batch record stays far below the changelog's record limit


@dataclass(frozen=True)
class StoreSpec:
    name: str
    topic: str  # the input topic: the store of its partition p lives with p's holder
    changelog: str  # the compacted topic, as many partitions as `topic`
    batched: bool = False


class PartitionStore:
    """One store's map for one partition."""

    def __init__(self, spec: StoreSpec, partition: int) -> None:
        self.spec = spec
        self.partition = partition
        self.data: dict[str, Any] = {}
        # The changelog's end when this worker last let the partition go (None: unknown).
        # If the changelog still ends there when the partition comes back, nobody wrote
        # in between: the map is current and need not be restored again.
        self.released_at: int | None = None

    @property
    def changelog(self) -> TopicPartition:
        return TopicPartition(self.spec.changelog, self.partition)

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(list(self.data.items()))

    def __len__(self) -> int:
        return len(self.data)

    # --- writing: the records a set of changes becomes, applied once they are written ---

    def records(self, changes: dict[str, Any]) -> list[Output]:
        """The changelog records for `changes` (key → value, None deletes)."""
        topic, p = self.spec.changelog, self.partition
        if not self.spec.batched:
            return [
                Output(topic, key.encode(), _encode(value), partition=p)
                for key, value in changes.items()
            ]
        if any(v is None for v in changes.values()):
            raise ValueError(f"store {self.spec.name} is batched: its keys are never deleted")
        items = list(changes.items())
        return [
            Output(
                topic,
                (BATCH_PREFIX + uuid.uuid4().hex).encode(),
                json.dumps(dict(items[i : i + MAX_BATCH_ENTRIES])).encode(),
                partition=p,
            )
            for i in range(0, len(items), MAX_BATCH_ENTRIES)
        ]

    def forget(self, keys: list[str]) -> None:
        """Drop keys from memory only: for a store whose changelog is deleted by age (not
        compacted), so that a restore would not bring them back either."""
        for key in keys:
            self.data.pop(key, None)

    def apply(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    # --- restoring ------------------------------------------------------------------------

    def replay(self, record: Record) -> None:
        """Apply one changelog record (in offset order)."""
        key = (record.key or b"").decode()
        value = record.value
        if key.startswith(BATCH_PREFIX):
            if value:
                self.data.update(json.loads(value))
        elif not value:
            self.data.pop(key, None)
        else:
            self.data[key] = json.loads(value)

    def clear(self) -> None:
        self.data.clear()
        self.released_at = None


def _encode(value: Any) -> bytes | None:
    return None if value is None else json.dumps(value, separators=(",", ":")).encode()
