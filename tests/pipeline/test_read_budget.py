"""Issue 29: the submissions the posting loops hold read at once are bounded across the
post stage (`read_budget.py`): first come, first served; a batch over the whole budget goes
alone; a loop stopped while it waits takes nothing and holds no one back."""

from __future__ import annotations

import asyncio

import pytest

from tests.pipeline.memory import book, memory_broker, stage_engine
from tests.pipeline.posting import (
    FAST,
    ONE,
    SLOW,
    Gate,
    client_for,
    committed,
    posted,
    publish,
    submissions,
    twice_each,
)
from tests.waiting import until
from worker.devenv.sandbox import XledgerSandbox
from worker.pipeline.post_stage import PostStage
from worker.pipeline.read_budget import ReadBudget


async def holding(budget: ReadBudget, n: int, release: asyncio.Event) -> None:
    async with budget.share(n):
        await release.wait()


async def started(n: int = 3) -> None:
    for _ in range(n):  # let the tasks run up to their first wait
        await asyncio.sleep(0)


async def test_shares_within_the_budget_go_at_once_and_the_next_waits_for_room() -> None:
    budget, release = ReadBudget(10), asyncio.Event()
    a = asyncio.create_task(holding(budget, 6, release))
    b = asyncio.create_task(holding(budget, 4, release))
    await started()
    assert budget.taken == 10
    c = asyncio.create_task(holding(budget, 1, release))
    await started()
    assert budget.taken == 10 and not c.done()
    release.set()
    await asyncio.gather(a, b, c)
    assert budget.taken == 0


async def test_a_large_share_is_not_passed_over_by_smaller_ones_that_would_fit() -> None:
    budget = ReadBudget(10)
    first, large_done = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(holding(budget, 5, first))
    await started()
    large = asyncio.create_task(holding(budget, 8, large_done))  # waits for a's 5
    await started()
    small = asyncio.create_task(holding(budget, 3, asyncio.Event()))  # fits; but came later
    await started()
    assert budget.taken == 5
    first.set()
    await started()
    assert budget.taken == 8  # the large one went first ...
    assert not small.done()
    large_done.set()
    await started()
    assert budget.taken == 3  # ... then the small one
    small.cancel()
    await asyncio.gather(a, large, small, return_exceptions=True)
    assert budget.taken == 0


async def test_a_share_over_the_whole_budget_takes_all_of_it_and_goes_alone() -> None:
    budget, release = ReadBudget(10), asyncio.Event()
    big = asyncio.create_task(holding(budget, 500, release))
    await started()
    assert budget.taken == 10
    other = asyncio.create_task(holding(budget, 1, release))
    await started()
    assert not other.done() and budget.taken == 10
    release.set()
    await asyncio.gather(big, other)
    assert budget.taken == 0


async def test_a_loop_stopped_while_it_waits_takes_nothing_and_holds_no_one_back() -> None:
    budget, release = ReadBudget(10), asyncio.Event()
    a = asyncio.create_task(holding(budget, 7, release))
    await started()
    first = asyncio.create_task(holding(budget, 9, release))  # first in line
    second = asyncio.create_task(holding(budget, 3, release))  # fits now, but is behind it
    await started()
    assert budget.taken == 7
    first.cancel()
    await started()
    assert budget.taken == 10 and first.cancelled()  # the one behind it went on
    release.set()
    await asyncio.gather(a, second)
    assert budget.taken == 0


async def test_a_loop_stopped_just_as_its_share_was_granted_gives_it_back() -> None:
    budget, release = ReadBudget(10), asyncio.Event()
    a = asyncio.create_task(holding(budget, 10, release))
    await started()
    waiting = asyncio.create_task(holding(budget, 5, asyncio.Event()))
    await started()
    release.set()
    await a  # gives back: the waiting share is granted ...
    waiting.cancel()  # ... and its loop is stopped before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert budget.taken == 0


def test_a_budget_holds_at_least_one_submission() -> None:
    with pytest.raises(ValueError):
        ReadBudget(0)


async def test_a_batch_holding_the_whole_read_budget_keeps_other_tenants_batches_unread(
    sandbox: tuple[XledgerSandbox, dict[str, str]],
) -> None:
    """The budget is the post stage's, not a loop's: while one tenant's batch holds all of
    it (its call in hand), another tenant's batch is not read or posted; then both are,
    each once. (With the default budget, the same two tenants post side by side:
    test_post_stage's first test.)"""
    box, tokens = sandbox
    b, broker = book(), memory_broker(ONE)
    client = Gate(client_for(box, tokens), SLOW)
    slow, fast = submissions(b, SLOW, 12), submissions(b, FAST, 7)
    publish(broker, slow)
    engine, _ = stage_engine(
        broker, ONE, lambda ctx: PostStage(ONE, b, client, ctx, reads=ReadBudget(10))
    )
    await engine.start()
    try:
        await asyncio.wait_for(client.entered.wait(), 10.0)
        publish(broker, fast)
        await asyncio.sleep(ONE.post_batch_window_s * 10)
        assert posted(box) == []  # the slow tenant's call holds the budget: nothing read
        client.open.set()
        await until(lambda: committed(broker) == 19)
        assert sorted(posted(box)) == twice_each(slow + fast)
    finally:
        await engine.stop(3.0)
        await client.client.aclose()
