"""faust's consumer bookkeeping after a rebalance, in-process (no broker): issue 14.

The restart test once lost payments whose events were committed without being enriched,
8–9 records past the committed offset. The cause: faust's drain loop keeps a "last read"
mark per partition. The seek back to the committed offset after a rebalance resets it,
but a record fetched before the seek can still arrive after it. faust then took the jump
for a hole in the log and marked it acknowledged (the arriving record included), dropped
the records re-read from the commit as already seen, and let one unacknowledged offset
through its commit check. These tests drive faust's own drain loop and commit rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from faust.transport.consumer import ConsumerMessage
from faust.types import TP

from worker.config import Settings
from worker.stream.faust_app import make_app

TP0 = TP("flyt.payment-status.v1", 0)
C = 100  # the committed offset: the next record the group reads


def message(offset: int, generation: int) -> ConsumerMessage:
    return ConsumerMessage(
        TP0.topic, 0, offset, 0.0, 0, None, b"k", b"{}", None, 1, 2, TP0, generation_id=generation
    )


def consumer_after_seek() -> Any:
    """faust's consumer as recovery leaves it: seeked to the committed offset C."""
    app = make_app(Settings(broker_kind="tansu", app_id="faust-consumer-test"), "127.0.0.1:1")
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    consumer = app.consumer
    consumer._committed_offset[TP0] = C
    consumer._read_offset[TP0] = C  # what perform_seek() does
    return consumer


class _Fetcher:
    def __init__(self) -> None:
        self._stopped = asyncio.Event()


async def drain(consumer: Any, batches: list[list[ConsumerMessage]]) -> list[int]:
    """Run faust's `_drain_messages` over these fetched batches; return what it delivered."""
    delivered: list[int] = []
    fetcher = _Fetcher()
    pending = list(batches)

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, ConsumerMessage]]:
        if not pending:
            fetcher._stopped.set()
            return
        for m in pending.pop(0):
            yield TP0, m

    async def callback(m: ConsumerMessage) -> None:
        delivered.append(m.offset)

    consumer.getmany = getmany
    consumer.callback = callback
    await asyncio.wait_for(consumer._drain_messages(fetcher), 10)
    return delivered


async def test_a_record_fetched_before_the_seek_does_not_hide_the_records_read_again() -> None:
    consumer = consumer_after_seek()
    stale = message(C + 8, generation=1)  # fetched before the rebalance, delivered after
    again = [message(o, generation=2) for o in range(C, C + 10)]
    delivered = await drain(consumer, [[stale], again])
    # The stream skips the stale record (old generation, never acknowledged); every record
    # read again from the commit must reach it.
    assert delivered[1:] == list(range(C, C + 10))


async def test_the_commit_never_passes_an_offset_nobody_acknowledged() -> None:
    consumer = consumer_after_seek()
    stale = message(C + 8, generation=1)
    await drain(consumer, [[stale]])
    # Only C+9 is processed so far (C..C+8 are still to come, or in flight).
    fresh = message(C + 9, generation=2)
    consumer.ack(fresh)
    assert consumer._filter_committable_offsets([TP0]) == {}
    for o in range(C, C + 9):
        consumer.ack(message(o, generation=2))
    assert consumer._filter_committable_offsets([TP0]) == {TP0: C + 10}


def test_a_commit_at_offset_zero_still_holds_later_acknowledgements() -> None:
    consumer = consumer_after_seek()
    consumer._committed_offset[TP0] = 0
    consumer.ack(message(1, generation=2))
    assert consumer._filter_committable_offsets([TP0]) == {}
    consumer.ack(message(0, generation=2))
    assert consumer._filter_committable_offsets([TP0]) == {TP0: 2}


async def test_a_partition_never_committed_is_read_from_its_first_offset() -> None:
    """The chaos campaign: a worker died before its first commit; the next owner began
    reading where the partition then ended, and with nothing committed faust's check had
    nothing to compare with: it committed past the payments before. Now the first offset
    is sought and counts as committed."""
    consumer = consumer_after_seek()
    del consumer._committed_offset[TP0]  # nothing committed by the group
    sought: list[tuple[TP, int]] = []

    async def seek_to_committed() -> dict[TP, int | None]:
        return {TP0: None}

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 0)

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    consumer.seek_to_committed = seek_to_committed
    consumer.earliest_offsets = earliest_offsets
    consumer.seek = seek
    consumer.assignment = lambda: {TP0}
    await consumer.perform_seek()
    assert sought == [(TP0, 0)]
    consumer.ack(message(25, generation=2))  # where the next owner began reading
    assert consumer._filter_committable_offsets([TP0]) == {}


async def test_a_first_offset_nobody_holds_is_read_again(monkeypatch) -> None:
    import worker.stream.faust_app as faust_app

    monkeypatch.setattr(faust_app, "HOLE_PATIENCE_S", 0.0)
    consumer = consumer_after_seek()
    consumer.app.heal_topics = frozenset({TP0.topic})
    sought: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    consumer.seek = seek
    held = message(C, generation=2)
    consumer._unacked_messages.add(held)  # the stream is still processing offset C
    consumer.ack(message(C + 1, generation=2))
    assert consumer._filter_committable_offsets([TP0]) == {}
    await asyncio.sleep(0)
    assert sought == []  # held: wait for it
    consumer._unacked_messages.discard(held)  # dropped by the stream, never acknowledged
    assert consumer._filter_committable_offsets([TP0]) == {}
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sought == [(TP0, C)]  # read again from the commit


async def test_the_post_stages_first_offset_is_never_read_again(monkeypatch) -> None:
    """A paused tenant holds its first submission on purpose, for minutes."""
    import worker.stream.faust_app as faust_app

    monkeypatch.setattr(faust_app, "HOLE_PATIENCE_S", 0.0)
    consumer = consumer_after_seek()
    consumer.app.heal_topics = frozenset({"flyt.payment-status.v1-other"})
    sought: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    consumer.seek = seek
    consumer.ack(message(C + 1, generation=2))
    assert consumer._filter_committable_offsets([TP0]) == {}
    await asyncio.sleep(0)
    assert sought == []
