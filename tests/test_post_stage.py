"""The post stage in-process (no broker): per-tenant loops, and acknowledgements that never
let faust commit past a payment not yet posted (issue 14)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from faust.transport.consumer import ConsumerMessage
from faust.types import TP

from worker.config import Settings
from worker.contracts import PaymentStatusEvent, Receipt, Submission
from worker.core import Enriched, evaluate
from worker.core.register_book import RegisterBook
from worker.demo.events import generate_events
from worker.demo.registers import demo_snapshots
from worker.stream.delivery import Output
from worker.stream.enrich_stage import PaymentStates
from worker.stream.faust_app import make_app
from worker.stream.ordered_acks import OrderedAcks
from worker.stream.post_stage import PostStage
from worker.xledger.client import ClientSettings, PostResult, Target

SLOW, FAST = "t-lillevik", "t-vestfold-bv"
TP0 = TP("xledger.submissions.v1", 0)


def demo_book() -> RegisterBook:
    book = RegisterBook()
    for snap in demo_snapshots():
        book.offer(snap)
    return book


def submissions(book: RegisterBook, tenant: str, n: int) -> list[Submission]:
    out = []
    for raw in generate_events(2000, seed=14):
        event = PaymentStatusEvent.model_validate(raw)
        if event.tenant_id != tenant or event.status != "Betalt":
            continue
        result = evaluate(event, book.index(tenant))
        if isinstance(result, Enriched):
            out.append(result.submission(event, datetime.now(UTC)))
        if len(out) == n:
            return out
    raise AssertionError("not enough demo submissions")


class Event:
    """What faust hands the agent: a value and its ConsumerMessage."""

    def __init__(self, sub: Submission, offset: int) -> None:
        self.value = sub.model_dump_json().encode()
        self.message = ConsumerMessage(
            TP0.topic, 0, offset, 0.0, 0, None, sub.tenant_id.encode(), self.value, None, 1, 1, TP0
        )
        self.message.refcount = 1


class HeldClient:
    """Xledger as the stage sees it; a held tenant's posts wait until released."""

    s = ClientSettings()

    def __init__(self, held: str) -> None:
        self.gate = {held: asyncio.Event()}
        self.posted: list[str] = []

    def ready_in(self, token_ref: str) -> float:
        return 0.0

    async def post(self, target: Target, subs: list[Submission], fence: Any = None) -> PostResult:
        if target.tenant_id in self.gate:
            await self.gate[target.tenant_id].wait()
        if fence is not None and not fence():  # as the client does before a mutation
            return PostResult(abandoned=list(subs))
        self.posted += [s.payment_id for s in subs]
        now = datetime.now(UTC)
        receipts = [
            Receipt(
                tenant_id=s.tenant_id,
                payment_id=s.payment_id,
                lines=[
                    {"extIdentifier": line.extIdentifier, "dbId": i}
                    for i, line in enumerate(s.lines)
                ],
                posted_at=now,
                batch_id="b-1",
            )
            for s in subs
        ]
        return PostResult(receipts=receipts, requests=1)


async def feed(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


def faust_consumer() -> Any:
    """faust's own ack and commit bookkeeping, on an app never started (no broker)."""
    app = make_app(Settings(broker_kind="tansu", app_id="post-stage-test"), "127.0.0.1:1")
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    return app.consumer


async def until(check: Any, what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def interleaved(book: RegisterBook) -> tuple[list[Event], set[str], set[str]]:
    """One partition: the slow tenant's payments at offsets 0–2 and 10, the fast one's 3–9."""
    slow, fast = submissions(book, SLOW, 4), submissions(book, FAST, 7)
    subs = slow[:3] + fast + slow[3:]
    events = [Event(sub, offset) for offset, sub in enumerate(subs)]
    return events, {s.payment_id for s in slow}, {s.payment_id for s in fast}


def test_faust_commits_past_an_offset_still_in_flight_when_acks_come_out_of_order() -> None:
    # Why OrderedAcks exists: acked straight to faust, the fast tenant's offsets 3–9 are
    # committable while offsets 0–2 still wait to be posted. A crash then loses them.
    consumer = faust_consumer()
    book = demo_book()
    events, _, _ = interleaved(book)
    for event in events[3:10]:
        event.message.ack(consumer)
    assert consumer._filter_committable_offsets([TP0]) == {TP0: 10}


async def test_a_slow_tenant_holds_its_partitions_commit_but_not_the_other_tenants_posts() -> None:
    consumer = faust_consumer()
    book = demo_book()
    events, slow, fast = interleaved(book)
    client = HeldClient(held=SLOW)
    delivered: list[Output] = []

    async def deliver(outputs: list[Output]) -> set[int]:
        delivered.extend(outputs)
        return set()

    async def ack(event: Event) -> None:
        event.message.ack(consumer)

    generation = 1
    acks = OrderedAcks(ack, lambda: generation)
    stage = post_stage(book, client, deliver)
    try:
        await stage.run(feed(events), acks)
        await until(lambda: acks.held()[TP0] == list(range(3, 10)), "the fast tenant finished")
        assert fast <= set(client.posted)
        assert not slow & set(client.posted)
        assert consumer._filter_committable_offsets([TP0]) == {}  # offset 0 is in flight
        assert acks.in_flight()[TP0] == list(range(11))

        client.gate[SLOW].set()
        await until(lambda: not acks.in_flight()[TP0], "every payment finished")
        assert consumer._filter_committable_offsets([TP0]) == {TP0: 11}
        assert len([o for o in delivered if o.topic.endswith("receipts.v1")]) == 11
    finally:
        stage.stop()


async def test_after_a_rebalance_events_of_the_old_generation_are_not_acknowledged() -> None:
    acked: list[int] = []

    async def ack(event: Event) -> None:
        acked.append(event.message.offset)

    generation = [1]
    acks = OrderedAcks(ack, lambda: generation[0])
    book = demo_book()
    events, _, _ = interleaved(book)
    old = [acks.track(e) for e in events[:3]]
    await acks.finish(old[0])
    assert acked == [0]
    generation[0] = 2  # faust revoked and re-assigned: it reads again from its commit
    for ticket in old[1:]:
        assert acks.stale(ticket)
        await acks.finish(ticket)
    assert acked == [0]
    again = [acks.track(e) for e in events[1:3]]  # re-delivered from offset 1
    for ticket in reversed(again):
        await acks.finish(ticket)
    assert acked == [0, 1, 2]


async def test_a_partition_read_again_from_an_earlier_offset_starts_a_new_lane() -> None:
    acked: list[int] = []

    async def ack(event: Event) -> None:
        acked.append(event.message.offset)

    acks = OrderedAcks(ack, lambda: 1)
    events, _, _ = interleaved(demo_book())
    first = [acks.track(e) for e in events[:4]]
    again = [acks.track(e) for e in events[2:4]]  # a seek back, same generation
    assert all(acks.stale(t) for t in first)
    for ticket in again:
        await acks.finish(ticket)
    assert acked == [2, 3]


async def _no_crash(exc: BaseException) -> None:
    pytest.fail(f"the post stage crashed: {exc!r}")


def post_stage(
    book: RegisterBook, client: Any, deliver: Any, states: PaymentStates | None = None
) -> PostStage:
    """The stage as the tests run it: a short gathering window, crashes fail the test."""
    return PostStage(
        Settings(broker_kind="tansu", post_batch_window_s=0.01),
        book,
        client,
        deliver,
        crash=_no_crash,
        states=states,
    )


class RefusingClient(HeldClient):
    """Xledger refusing every payment's content (an account it does not know)."""

    async def post(self, target: Target, subs: list[Submission], fence: Any = None) -> PostResult:
        return PostResult(refused=[(s, "Konto 14799 finnes ikke") for s in subs], requests=1)


async def test_a_refused_payment_is_one_rejection_waiting_for_a_newer_snapshot() -> None:
    """R14 (decided): a rejection XLEDGER_REFUSED, parked for R16, and no dead letter."""
    book = demo_book()
    sub = submissions(book, FAST, 1)[0]
    assert sub.event is not None  # the submission carries its Betalt event
    delivered: list[Output] = []

    async def deliver(outputs: list[Output]) -> set[int]:
        delivered.extend(outputs)
        return set()

    finished: list[int] = []

    async def ack(event: Event) -> None:
        finished.append(event.message.offset)

    states = PaymentStates({}, {})
    stage = post_stage(book, RefusingClient(held="nobody"), deliver, states)
    try:
        await stage.run(feed([Event(sub, 0)]), OrderedAcks(ack, lambda: 1))
        await until(lambda: finished == [0], "the refused payment acknowledged")
    finally:
        stage.stop()
    assert [o.topic for o in delivered] == ["flyt.payment-rejections.v1"]
    rejection = json.loads(delivered[0].value or b"")
    assert rejection["reason"] == "XLEDGER_REFUSED" and rejection["retryable"] is True
    assert "Konto 14799 finnes ikke" in rejection["problems"][0]["message"]
    key = sub.payment_id.encode()
    assert states.handled[key] == {FAST: "rejected"}
    waiting = states.pending[key][FAST]
    assert waiting["version"] == sub.snapshot_version
    assert PaymentStatusEvent.model_validate_json(waiting["event"]) == sub.event


async def test_a_batch_whose_partition_moved_to_another_worker_is_not_posted_here() -> None:
    """The chaos campaign posted 39 payments twice: a worker that had lost the partition
    in a rebalance still posted the batch it had looked up before, while the new owner
    posted the same payments. The fence stops the old owner before its mutation."""
    book = demo_book()
    events, slow, fast = interleaved(book)
    client = HeldClient(held=SLOW)
    acked: list[int] = []

    async def deliver(outputs: list[Output]) -> set[int]:
        return set()

    async def ack(event: Event) -> None:
        acked.append(event.message.offset)

    generation = [1]
    acks = OrderedAcks(ack, lambda: generation[0])
    stage = post_stage(book, client, deliver)
    try:
        await stage.run(feed(events), acks)
        await until(lambda: fast <= set(client.posted), "the fast tenant posted")
        generation[0] = 2  # a rebalance: the partition is someone else's now
        client.gate[SLOW].set()  # the slow tenant's call reaches its mutation
        await until(lambda: not stage._posters[SLOW].queue.qsize(), "the slow batch handled")
        await asyncio.sleep(0.05)
        assert not slow & set(client.posted)  # not posted by the old owner
        assert acked == []  # nothing acknowledged: offset 0 was in flight, then stale
    finally:
        stage.stop()
