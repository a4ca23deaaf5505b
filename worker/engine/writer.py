"""How a stage finishes records: outputs on the broker, then state, then done.

`Writer.write(outputs, changes, done)` is the only way a record becomes done
(`commit.py` steps 2 and 3): it delivers the outputs (acks=all), then the state changes
as changelog records of the stores they touch (acks=all), then applies the changes to
the stores in memory, then marks the records done in their lanes. A state change whose
source had its output dead-lettered instead (too large for the broker) is dropped: that
input got no outcome but the dead letter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from worker.engine.delivery import Delivery
from worker.engine.offsets import Lane
from worker.engine.records import Output, Record, StateChange
from worker.engine.state import PartitionStore


class Writer:
    def __init__(
        self,
        outputs: Delivery,
        changelogs: Delivery,
        store: Callable[[str, int], PartitionStore | None],
    ) -> None:
        self.outputs = outputs
        self.changelogs = changelogs
        self.store = store  # a held store, or None (its partition was revoked meanwhile)

    async def write(
        self,
        outputs: list[Output],
        changes: Iterable[StateChange] = (),
        done: Iterable[tuple[Lane, Record]] = (),
    ) -> set[int]:
        """Returns the `id()` of each source whose output was dead-lettered instead."""
        dead = await self.outputs.deliver(outputs) if outputs else set()
        by_store: dict[tuple[str, int], dict[str, Any]] = {}
        for change in changes:
            if change.source is not None and id(change.source) in dead:
                continue
            by_store.setdefault((change.store, change.partition), {})[change.key] = change.value
        stores: list[tuple[PartitionStore, dict[str, Any]]] = []
        records: list[Output] = []
        for (name, partition), values in by_store.items():
            store = self.store(name, partition)
            if store is None:  # no longer ours: the new holder reads the input again
                continue
            stores.append((store, values))
            records += store.records(values)
        if records:
            await self.changelogs.deliver(records)
        for store, values in stores:
            store.apply(values)
        for lane, record in done:
            lane.done(record.offset)
        return dead
