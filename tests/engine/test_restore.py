"""Stores restored from their changelogs (`worker/engine/restore.py`), on the memory
backend: read to the end in offset order, tombstones (empty bytes too) delete, batched
stores, and a store let go cleanly that comes back unchanged is kept as it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.engine.memory import MemoryBroker, MemoryReader
from worker.engine.records import Record, TopicPartition
from worker.engine.restore import remember_ends, restore
from worker.engine.state import MAX_BATCH_ENTRIES, PartitionStore, StoreSpec

COUNTS = StoreSpec("counts", "in", "counts-changelog")
HANDLED = StoreSpec("handled", "in", "handled-changelog", batched=True)


class OneAtATime(MemoryReader):
    """A reader whose polls bring one record of each partition: a restore must poll on
    until it reaches the end."""

    async def poll(self, timeout_s: float) -> dict[TopicPartition, list[Record]]:
        self.broker.check()
        return await self.broker.fetch(self.positions, self.assigned, timeout_s, limit=1)


def broker_with_changelogs() -> MemoryBroker:
    broker = MemoryBroker()
    for spec in (COUNTS, HANDLED):
        broker.create_topic(spec.changelog, 2)
    return broker


def write(broker: MemoryBroker, store: PartitionStore, changes: dict[str, Any]) -> None:
    """The changelog records of `changes`, as the engine's writer sends them."""
    for out in store.records(changes):
        broker.append(out.topic, out.key, out.value, partition=out.partition)


def readers(broker: MemoryBroker) -> Callable[[], MemoryReader]:
    return lambda: OneAtATime(broker)


async def test_a_store_is_filled_from_its_changelog_to_its_end_in_offset_order() -> None:
    broker = broker_with_changelogs()
    writer0, writer1 = PartitionStore(COUNTS, 0), PartitionStore(COUNTS, 1)
    for i in range(12):
        write(broker, writer0, {f"k{i % 4}": i})  # a later write of a key wins
    write(broker, writer1, {"only-in-1": 1})
    stores = [PartitionStore(COUNTS, 0), PartitionStore(COUNTS, 1)]
    await restore(readers(broker), stores)
    assert stores[0].data == {"k0": 8, "k1": 9, "k2": 10, "k3": 11}
    assert stores[1].data == {"only-in-1": 1}


async def test_a_tombstone_deletes_its_key_whether_none_or_empty_bytes() -> None:
    broker = broker_with_changelogs()
    write(broker, PartitionStore(COUNTS, 0), {"a": 1, "b": 2, "c": 3})
    write(broker, PartitionStore(COUNTS, 0), {"a": None})  # a tombstone: value None
    broker.append(COUNTS.changelog, b"b", b"", partition=0)  # as Tansu returns one
    [store] = stores = [PartitionStore(COUNTS, 0)]
    await restore(readers(broker), stores)
    assert store.data == {"c": 3}


async def test_a_batched_store_is_restored_from_its_batch_records_later_ones_winning() -> None:
    broker = broker_with_changelogs()
    writer = PartitionStore(HANDLED, 1)
    many = {f"P-{i}": "submitted" for i in range(MAX_BATCH_ENTRIES + 500)}
    write(broker, writer, many)  # two records: a batch stays below the record limit
    write(broker, writer, {"P-7": "posted"})
    assert len(broker.read(HANDLED.changelog, 1)) == 3  # two batch records, then one
    [store] = stores = [PartitionStore(HANDLED, 1)]
    await restore(readers(broker), stores)
    assert store.data == {**many, "P-7": "posted"}


async def test_what_a_store_held_before_is_gone_after_a_restore() -> None:
    broker = broker_with_changelogs()
    write(broker, PartitionStore(COUNTS, 0), {"a": 1})
    store = PartitionStore(COUNTS, 0)
    store.apply({"stale": 1})  # from an earlier holding, not let go cleanly
    await restore(readers(broker), [store])
    assert store.data == {"a": 1}


async def test_a_store_let_go_cleanly_and_unchanged_since_is_kept_as_it_is() -> None:
    broker = broker_with_changelogs()
    store = PartitionStore(COUNTS, 0)
    write(broker, store, {"a": 1, "b": 2})
    await restore(readers(broker), [store])
    store.apply({"a": 5})  # this worker's own write, as the writer applies it ...
    write(broker, store, {"a": 5})  # ... once its changelog record is on the broker
    store.apply({"in-memory-only": 1})  # shows whether the map was read again
    await remember_ends(readers(broker), [store])
    assert store.released_at == 3  # where the changelog ends now
    await restore(readers(broker), [store])
    assert store.data == {"a": 5, "b": 2, "in-memory-only": 1}
    assert store.released_at is None  # held again


async def test_a_store_whose_changelog_grew_while_let_go_is_read_again() -> None:
    broker = broker_with_changelogs()
    store = PartitionStore(COUNTS, 0)
    write(broker, store, {"a": 1})
    await restore(readers(broker), [store])
    store.apply({"in-memory-only": 1})
    await remember_ends(readers(broker), [store])
    write(broker, PartitionStore(COUNTS, 0), {"b": 2})  # another holder wrote meanwhile
    await restore(readers(broker), [store])
    assert store.data == {"a": 1, "b": 2}


async def test_ends_unknown_when_letting_go_mean_a_restore() -> None:
    broker = broker_with_changelogs()
    store = PartitionStore(COUNTS, 0)
    write(broker, store, {"a": 1})
    store.released_at = 1  # an end noted before
    broker.down = True
    await remember_ends(readers(broker), [store])  # best effort: never raises
    assert store.released_at is None
    broker.down = False
    store.apply({"in-memory-only": 1})
    await restore(readers(broker), [store])
    assert store.data == {"a": 1}
