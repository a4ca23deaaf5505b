"""The enrich stage in-process (no broker): R17 intake, outputs before state, R16."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from worker.config import Settings
from worker.contracts import RegisterSnapshot
from worker.core.register_book import RegisterBook
from worker.demo.events import generate_events
from worker.demo.registers import demo_snapshot_dicts
from worker.stream.delivery import Output
from worker.stream.enrich_stage import REJECTED, SUBMITTED, EnrichStage, PaymentStates

S = Settings(broker_kind="tansu")
T = S.topics


@dataclass
class Message:
    offset: int
    value: bytes
    key: bytes | None = b"k"
    topic: str = T.payments
    partition: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class Event:
    def __init__(self, offset: int, body: dict[str, Any] | bytes) -> None:
        self.value = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.message = Message(offset, self.value)


class Broker:
    """Takes outputs; remembers what the states held when it did (outputs come first)."""

    def __init__(self, states: PaymentStates, fail: bool = False) -> None:
        self.states, self.fail = states, fail
        self.outputs: list[Output] = []
        self.handled_at_delivery: list[dict[bytes, Any]] = []

    async def deliver(self, outputs: list[Output]) -> set[int]:
        self.handled_at_delivery.append(dict(self.states.handled))
        if self.fail:
            raise ConnectionError("broker away")
        self.outputs += outputs
        return set()  # every output written

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(o.value or b"") for o in self.outputs if o.topic == topic]


def book(snapshots: list[dict[str, Any]] | None = None) -> RegisterBook:
    b = RegisterBook()
    for snap in snapshots or demo_snapshot_dicts():
        b.offer(RegisterSnapshot.model_validate(snap))
    return b


def stage(fail: bool = False, snapshots: list[dict[str, Any]] | None = None):  # type: ignore[no-untyped-def]
    states = PaymentStates({}, {})
    broker = Broker(states, fail)
    return EnrichStage(S, book(snapshots), broker.deliver, states), broker, states


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


async def test_a_batch_ends_each_event_in_its_outcome_and_writes_state_after_delivery() -> None:
    enrich, broker, states = stage()
    good = betalt(1)
    other = {**betalt(2), "status": "Godkjent"}
    rejected = gap(betalt(3))
    events = [
        Event(0, b"\xff not json"),
        Event(1, other),  # R17: not Betalt, ignored
        Event(2, good),
        Event(3, good),  # R17: a duplicate within the batch
        Event(4, rejected),
    ]
    await enrich.handle(events)
    assert [s["payment_id"] for s in broker.on(T.submissions)] == [good["payment_id"]]
    assert [r["payment_id"] for r in broker.on(T.rejections)] == [rejected["payment_id"]]
    [dlq] = [o for o in broker.outputs if o.topic == T.dlq]
    assert dlq.value == b"\xff not json" and ("dlq.reason", b"invalid") in (dlq.headers or [])
    assert broker.handled_at_delivery == [{}]  # nothing remembered before the outputs are out
    assert states.handled_as("t-lillevik", good["payment_id"]) == SUBMITTED
    assert states.handled_as("t-lillevik", rejected["payment_id"]) == REJECTED
    assert [p for p, _ in states.waiting("t-lillevik")] == [rejected["payment_id"]]


async def test_a_betalt_event_for_a_payment_handled_earlier_posts_nothing() -> None:
    enrich, broker, _ = stage()
    good = betalt(1)
    await enrich.handle([Event(0, good)])
    await enrich.handle([Event(1, {**good, "event_id": "evt-again"})])  # R17
    assert len(broker.on(T.submissions)) == 1


async def test_when_the_outputs_cannot_be_written_no_state_is_written() -> None:
    enrich, _, states = stage(fail=True)
    with pytest.raises(ConnectionError):
        await enrich.handle([Event(0, betalt(1))])
    assert states.handled == {} and states.pending == {}  # the batch is read again


async def test_r16_a_newer_snapshot_posts_the_waiting_payment_once() -> None:
    snapshots = demo_snapshot_dicts()
    enrich, broker, states = stage(snapshots=snapshots)
    event = gap(betalt(3))
    key = ("t-lillevik", event["payment_id"])
    await enrich.handle([Event(0, event)])
    fixed = copy.deepcopy(next(d for d in snapshots if d["tenant_id"] == "t-lillevik"))
    fixed["version"] += 1
    fixed["registers"]["betalingstype"].append({"category": "REISEUTGIFTER", "value": "14700"})
    assert enrich.book.offer(RegisterSnapshot.model_validate(fixed)).accepted
    await enrich.reevaluate("t-lillevik")
    [sub] = broker.on(T.submissions)
    assert sub["payment_id"] == key[1] and sub["lines"][0]["account"] == "14700"
    assert states.handled_as(*key) == SUBMITTED and states.waiting("t-lillevik") == []
    await enrich.catch_up()  # a repeat (a rebalance's catch-up) is harmless
    assert len(broker.on(T.submissions)) == 1


async def test_r16_a_newer_snapshot_that_leaves_the_gap_keeps_it_waiting_once_per_version() -> None:
    snapshots = demo_snapshot_dicts()
    enrich, broker, states = stage(snapshots=snapshots)
    await enrich.handle([Event(0, gap(betalt(3)))])
    newer = copy.deepcopy(next(d for d in snapshots if d["tenant_id"] == "t-lillevik"))
    newer["version"] += 1
    assert enrich.book.offer(RegisterSnapshot.model_validate(newer)).accepted
    await enrich.reevaluate("t-lillevik")
    await enrich.reevaluate("t-lillevik")  # same version again: nothing new to say
    assert len(broker.on(T.rejections)) == 2  # the first, and one for the newer version
    [(_, entry)] = states.waiting("t-lillevik")
    assert entry["version"] == newer["version"]


async def test_an_event_the_stage_fails_on_is_dead_lettered_and_the_rest_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug met by one event must not strand its batch (found by make fuzz): each event
    is handled alone, and the one that still fails is dead-lettered (reason crash)."""
    import worker.stream.enrich_stage as enrich_stage

    enrich, broker, states = stage()
    good, poison = betalt(1), betalt(2)
    real = enrich_stage.evaluate

    def evaluate(event: Any, index: Any) -> Any:
        if event.payment_id == poison["payment_id"]:
            raise ZeroDivisionError("a bug")
        return real(event, index)

    monkeypatch.setattr(enrich_stage, "evaluate", evaluate)
    events = [Event(0, good), Event(1, poison)]
    with pytest.raises(ZeroDivisionError):
        await enrich.handle(events)
    assert broker.outputs == []  # nothing out, nothing remembered: the batch is intact
    await enrich.handle_one_by_one(events)
    assert [s["payment_id"] for s in broker.on(T.submissions)] == [good["payment_id"]]
    [dlq] = [o for o in broker.outputs if o.topic == T.dlq]
    assert ("dlq.reason", b"crash") in (dlq.headers or []) and dlq.value == events[1].value
    assert states.handled_as("t-lillevik", good["payment_id"]) == SUBMITTED
