"""The enrich stage on the engine's memory backend: R17 intake, outputs before state, R16."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from tests.pipeline.memory import (
    S,
    T,
    bodies,
    book,
    committed_all,
    enrich_engine,
    memory_broker,
    publish,
    records,
)
from tests.waiting import until
from worker.contracts import RegisterSnapshot
from worker.contracts.headers import BACKLOG, FIRST_EVALUATION
from worker.demo.events import generate_events
from worker.demo.snapshots import demo_snapshot_dicts
from worker.pipeline.enrich_stage import BACKLOG_RECORDS
from worker.pipeline.payment_state import REJECTED, SUBMITTED, PaymentStates
from worker.pipeline.topics import HANDLED, PENDING, changelog_topic


def betalt(seed: int, tenant: str = "t-lillevik") -> dict[str, Any]:
    return next(
        e
        for e in generate_events(200, seed=seed)
        if e["status"] == "Betalt" and e["tenant_id"] == tenant
    )


def gap(event: dict[str, Any]) -> dict[str, Any]:
    """A category not in Betalingstyper: MISSING_ACCOUNT, retryable (R16)."""
    event = copy.deepcopy(event)
    event["payment"]["category"] = "REISEUTGIFTER"
    event["payment"]["vat_code"] = None
    return event


def states_of(engine: Any, payment: str) -> PaymentStates:
    """The payment state of the partition the payment's event landed on."""
    for p in range(S.partitions):
        s = PaymentStates(p, engine.store(HANDLED, p), engine.store(PENDING, p))
        if any(k.endswith(payment) for k, _ in s.handled.items()):
            return s
    raise AssertionError(f"{payment} is in no partition's state")


async def test_a_batch_ends_each_event_in_its_outcome_and_writes_state_after_its_outputs() -> None:
    broker = memory_broker()
    engine, _ = enrich_engine(broker, book())
    good = betalt(1)
    other = {**betalt(2), "status": "Godkjent"}
    rejected = gap(betalt(3))
    publish(broker, [b"\xff not json", other, good, good, rejected])  # good twice: R17
    await engine.start()
    try:
        await until(lambda: committed_all(broker, S, T.payments))
        assert [s["payment_id"] for s in bodies(broker, T.submissions)] == [good["payment_id"]]
        [sub] = records(broker, T.submissions)
        assert sub.header(FIRST_EVALUATION) == b"1"  # its first evaluation
        assert [r["payment_id"] for r in bodies(broker, T.rejections)] == [rejected["payment_id"]]
        [dlq] = records(broker, T.dlq)
        assert dlq.value == b"\xff not json" and dlq.header("dlq.reason") == b"invalid"
        state = states_of(engine, good["payment_id"])
        assert state.handled_as(("t-lillevik", good["payment_id"])) == SUBMITTED
        rstate = states_of(engine, rejected["payment_id"])
        assert rstate.handled_as(("t-lillevik", rejected["payment_id"])) == REJECTED
        assert [p for p, _ in rstate.waiting("t-lillevik")] == [rejected["payment_id"]]
        # The state of each partition was written after the outputs of its events
        # (engine/writer.py); partitions are worked on side by side, so only within one.
        changelogs = {changelog_topic(S, HANDLED), changelog_topic(S, PENDING)}
        source = {  # each output's place in the history → the partition of its event
            broker.history.index((r.topic, r.partition, r.offset)): _event_partition(broker, r)
            for topic in (T.submissions, T.rejections, T.dlq)
            for r in records(broker, topic)
        }
        for i, (topic, partition, _) in enumerate(broker.history):
            if topic in changelogs:
                later = [j for j, p in source.items() if p == partition and j > i]
                assert not later, f"state of partition {partition} written before its outputs"
    finally:
        await engine.stop(2.0)


def _event_partition(broker: Any, output: Any) -> int:
    """The payment-status partition of the event an output came from."""
    if output.topic == T.dlq:
        [event] = [r for r in records(broker, T.payments) if r.value == output.value]
    else:
        payment = json.loads(output.value or b"")["payment_id"]
        [event] = [
            r
            for r in records(broker, T.payments)
            if b'"payment_id"' in (r.value or b"")
            and json.loads(r.value or b"").get("payment_id") == payment
        ][:1]
    return int(event.partition)


async def test_a_betalt_event_for_a_payment_handled_earlier_posts_nothing() -> None:
    broker = memory_broker()
    engine, _ = enrich_engine(broker, book())
    good = betalt(1)
    publish(broker, [good])
    await engine.start()
    try:
        await until(lambda: committed_all(broker, S, T.payments))
        publish(broker, [{**good, "event_id": "evt-again"}])  # R17, in a later batch
        await until(lambda: committed_all(broker, S, T.payments))
        assert len(bodies(broker, T.submissions)) == 1
    finally:
        await engine.stop(2.0)


async def test_while_the_outputs_cannot_be_written_no_state_is_written_and_nothing_committed() -> (
    None
):
    broker = memory_broker()
    engine, _ = enrich_engine(broker, book())
    broker.refusing.add(T.submissions)  # the broker does not take the outputs
    publish(broker, [betalt(1)])
    await engine.start()
    try:
        await asyncio.sleep(0.7)  # a write failed, and is retried
        assert records(broker, changelog_topic(S, HANDLED)) == []
        assert not committed_all(broker, S, T.payments)
        broker.refusing.clear()  # back: written, then state, then committed
        await until(lambda: committed_all(broker, S, T.payments))
        assert len(bodies(broker, T.submissions)) == 1
        assert len(records(broker, changelog_topic(S, HANDLED))) == 1
    finally:
        await engine.stop(2.0)


def fixed(snapshots: list[dict[str, Any]], account: str = "14700") -> dict[str, Any]:
    newer = copy.deepcopy(next(d for d in snapshots if d["tenant_id"] == "t-lillevik"))
    newer["version"] += 1
    newer["registers"]["betalingstype"].append({"category": "REISEUTGIFTER", "value": account})
    return newer


async def test_r16_a_newer_snapshot_posts_the_waiting_payment_once() -> None:
    snapshots = demo_snapshot_dicts()
    broker = memory_broker()
    b = book(snapshots)
    engine, stage = enrich_engine(broker, b)
    event = gap(betalt(3))
    key = ("t-lillevik", event["payment_id"])
    publish(broker, [event])
    await engine.start()
    try:
        await until(lambda: committed_all(broker, S, T.payments))
        assert b.offer(RegisterSnapshot.model_validate(fixed(snapshots))).accepted
        stage.snapshot_accepted("t-lillevik")
        await until(lambda: len(bodies(broker, T.submissions)) == 1)
        [sub] = bodies(broker, T.submissions)
        assert sub["payment_id"] == key[1] and sub["lines"][0]["account"] == "14700"
        # Not its first evaluation (it was rejected, maybe refused by Xledger): a code
        # Xledger refused lately is sent again, as someone may have fixed it there.
        assert records(broker, T.submissions)[0].header(FIRST_EVALUATION) is None
        await until(lambda: states_of(engine, key[1]).handled_as(key) == SUBMITTED)
        assert states_of(engine, key[1]).waiting("t-lillevik") == []
        stage.snapshot_accepted("t-lillevik")  # a repeat (a rebalance's catch-up) is harmless
        await asyncio.sleep(0.2)
        assert len(bodies(broker, T.submissions)) == 1
    finally:
        await engine.stop(2.0)


async def test_r16_a_newer_snapshot_that_leaves_the_gap_keeps_it_waiting_once_per_version() -> None:
    snapshots = demo_snapshot_dicts()
    broker = memory_broker()
    b = book(snapshots)
    engine, stage = enrich_engine(broker, b)
    event = gap(betalt(3))
    publish(broker, [event])
    await engine.start()
    try:
        await until(lambda: committed_all(broker, S, T.payments))
        newer = copy.deepcopy(next(d for d in snapshots if d["tenant_id"] == "t-lillevik"))
        newer["version"] += 1
        assert b.offer(RegisterSnapshot.model_validate(newer)).accepted
        stage.snapshot_accepted("t-lillevik")
        await until(lambda: len(bodies(broker, T.rejections)) == 2)
        stage.snapshot_accepted("t-lillevik")  # same version again: nothing new to say
        await asyncio.sleep(0.2)
        assert len(bodies(broker, T.rejections)) == 2  # the first, and one for the newer
        [(_, entry)] = states_of(engine, event["payment_id"]).waiting("t-lillevik")
        assert entry["version"] == newer["version"]
    finally:
        await engine.stop(2.0)


async def test_r16_covers_only_the_partitions_this_worker_holds() -> None:
    """engine.md: R16 scans owned state only, so two workers never re-evaluate the same
    waiting payment (faust's tables kept other workers' keys)."""
    snapshots = demo_snapshot_dicts()
    broker = memory_broker()
    books = [book(snapshots), book(snapshots)]
    (e1, s1), (e2, s2) = enrich_engine(broker, books[0]), enrich_engine(broker, books[1])
    events = [gap(betalt(seed)) for seed in range(3, 40)]
    events = list({e["payment_id"]: e for e in events}.values())
    publish(broker, events)
    await e1.start()
    await until(lambda: committed_all(broker, S, T.payments))
    await e2.start()
    try:
        await until(lambda: len(e1.lanes) == 2 and len(e2.lanes) == 2)  # one partition each
        before = len(bodies(broker, T.submissions))
        for b, stage in zip(books, (s1, s2), strict=True):
            assert b.offer(RegisterSnapshot.model_validate(fixed(snapshots))).accepted
            stage.snapshot_accepted("t-lillevik")
        lillevik = {e["payment_id"] for e in events if e["tenant_id"] == "t-lillevik"}
        await until(lambda: len(bodies(broker, T.submissions)) - before == len(lillevik))
        await asyncio.sleep(0.3)
        subs = [s["payment_id"] for s in bodies(broker, T.submissions)]
        assert sorted(subs) == sorted(lillevik)  # each once, by whoever holds it
    finally:
        await e1.stop(2.0)
        await e2.stop(2.0)


async def test_an_event_the_stage_fails_on_is_dead_lettered_and_the_rest_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug met by one event must not strand its batch (found by make fuzz): each event
    is handled alone, and the one that still fails is dead-lettered (reason crash)."""
    import worker.pipeline.enrich_stage as enrich_stage

    good, poison = betalt(1), betalt(2)
    real = enrich_stage.evaluate

    def evaluate(event: Any, index: Any) -> Any:
        if event.payment_id == poison["payment_id"]:
            raise ZeroDivisionError("a bug")
        return real(event, index)

    monkeypatch.setattr(enrich_stage, "evaluate", evaluate)
    broker = memory_broker()
    engine, _ = enrich_engine(broker, book())
    publish(broker, [good, poison])
    await engine.start()
    try:
        await until(lambda: committed_all(broker, S, T.payments))
        assert [s["payment_id"] for s in bodies(broker, T.submissions)] == [good["payment_id"]]
        [dlq] = records(broker, T.dlq)
        assert dlq.header("dlq.reason") == b"crash"
        assert dlq.key == poison["payment_id"].encode()
    finally:
        await engine.stop(2.0)


async def test_submissions_made_while_far_behind_say_so_and_the_last_ones_do_not() -> None:
    """Issue 20: a batch with BACKLOG_RECORDS or more of its partition still to do marks its
    submissions `flyt.backlog` (the post stage gathers longer in a burst); once the stage
    has caught up, its submissions carry no mark."""
    s = replace(S, partitions=1, enrich_batch_max=100)
    broker = memory_broker(s)
    engine, _ = enrich_engine(broker, book(), s)
    events = [e for e in generate_events(3000, seed=31) if e["status"] == "Betalt"][
        : BACKLOG_RECORDS + 200
    ]
    publish(broker, events)
    await engine.start()
    try:
        await until(lambda: committed_all(broker, s, T.payments))
        flags = [r.header(BACKLOG) is not None for r in records(broker, T.submissions)]
        assert flags[0] and not flags[-1]
        assert flags == sorted(flags, reverse=True)  # marked while behind, then not
    finally:
        await engine.stop(3.0)
