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
