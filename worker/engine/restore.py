"""Restoring partition stores from their changelogs, before a partition's first record.

Each store is read from its changelog partition's first offset to the end the partition
had when the restore began: records written after that are this worker's own (it holds
the partition now), applied as it writes them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from worker import logs
from worker.engine.backend import Reader
from worker.engine.records import TopicPartition
from worker.engine.state import PartitionStore

log = logs.get("worker.engine")


async def restore(new_reader: Callable[[], Reader], stores: list[PartitionStore]) -> None:
    """Fill `stores` from their changelogs. A store this worker let go cleanly, whose
    changelog still ends where it ended then, is kept as it is (nobody wrote since)."""
    if not stores:
        return
    started = time.monotonic()
    reader = new_reader()
    await reader.start()
    try:
        tps = [s.changelog for s in stores]
        # Offsets first, assignment after, and only of what needs reading: aiokafka's
        # fetcher swallows a cancellation when its assignment changes under it, and its
        # stop() then never returns (seen here: a restore re-assigning to an empty list).
        ends = await reader.end_offsets(tps)
        starts = await reader.beginning_offsets(tps)
        todo: dict[TopicPartition, PartitionStore] = {}
        for store in stores:
            tp = store.changelog
            if store.released_at is not None and store.released_at == ends[tp]:
                store.released_at = None  # current; held again
                continue
            store.clear()
            if ends[tp] > starts[tp]:
                todo[tp] = store
        records = 0
        if todo:
            reader.assign(list(todo))
            for tp in todo:
                reader.seek(tp, starts[tp])
        while todo:
            batches = await reader.poll(0.2)
            for tp, batch in batches.items():
                target = todo.get(tp)
                if target is None:
                    continue
                for record in batch:
                    target.replay(record)
                records += len(batch)
            for tp in list(todo):
                if await reader.position(tp) >= ends[tp]:
                    del todo[tp]
        log.info(
            "state_restored",
            stores=len(stores),
            records=records,
            seconds=round(time.monotonic() - started, 3),
        )
    finally:
        await stop_reader(reader)


async def stop_reader(reader: Reader, timeout_s: float = 5.0) -> None:
    """Stop a reader, giving up after `timeout_s` (its connections go with the process)."""
    try:
        async with asyncio.timeout(timeout_s):
            await reader.stop()
    except TimeoutError:
        log.warning("reader_stop_timed_out")


async def remember_ends(new_reader: Callable[[], Reader], stores: list[PartitionStore]) -> None:
    """On letting partitions go: note where each store's changelog ends now, so that a
    store that comes back unchanged needs no restore. Best effort: unknown means restore."""
    if not stores:
        return
    reader = new_reader()
    try:
        await reader.start()
        ends = await reader.end_offsets([s.changelog for s in stores])
        for store in stores:
            store.released_at = ends.get(store.changelog)
    except Exception as exc:
        log.info("state_ends_unknown", error=repr(exc))
        for store in stores:
            store.released_at = None
    finally:
        await stop_reader(reader)
