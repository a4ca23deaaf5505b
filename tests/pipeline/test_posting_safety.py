"""Issue 26: the windows in which a payment could be posted twice, lost, or given two
outcomes, each pinned by a test (the finding's number in the test's docstring).

The worker runs on the engine's memory backend (one stage, or the whole pipeline), posting
over HTTP to the real Xledger sandbox; a sandbox fault or a scripted client makes the
window happen. The client's own windows (N5, N10) are pinned in
`tests/xledger/test_never_twice.py`, the consumer's (N8) in
`tests/engine/test_engine_memory.py`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import httpx

from tests.pipeline.memory import bodies, book, memory_broker, memory_pipeline, records
from tests.pipeline.posting import (
    ONE,
    client_for,
    committed,
    notes,
    post_engine,
    posted,
    publish,
    running,
    submissions,
    twice_each,
)
from tests.sandboxes import sandbox_for
from tests.waiting import until
from tests.xledger.helpers import Forwarding
from worker.config import Settings
from worker.contracts import RegisterSnapshot
from worker.core.endpoints import UrlPolicy
from worker.demo.events import generate_events
from worker.demo.snapshots import demo_snapshot_dicts
from worker.devenv.sandbox import FaultProfile, XledgerSandbox
from worker.engine.records import StateChange, TopicPartition
from worker.pipeline.posting_lease import takeover_wait
from worker.pipeline.topics import POSTING, changelog_topic
from worker.runtime import client_settings
from worker.xledger.client import Target, XledgerClient
from worker.xledger.secrets import SecretStore

FAST = "t-vestfold-bv"
T = ONE.topics


def ledger_counts(box: XledgerSandbox) -> Counter[str]:
    return Counter(line["extIdentifier"] for line in box.ledger())


# --- N1 ---------------------------------------------------------------------------------


async def test_n1_a_stop_that_must_cut_a_mutation_leaves_the_partition_unclean(
    sandbox: tuple[XledgerSandbox, dict[str, str]],
) -> None:
    """N1: a stop whose deadline comes while a mutation is on its way cannot report a
    clean hand-over: the partition's note stays `held` (not `released`), so the next
    holder waits the settle time before it looks the payments up."""
    box, tokens = sandbox
    s = replace(ONE, xledger_request_deadline_s=5.0, xledger_settle_s=6.0, stop_grace_s=15.0)
    box.faults = FaultProfile(store_after_s=3.0)  # the mutation takes 3 s
    b, broker = book(), memory_broker(s)
    publish(broker, submissions(b, FAST, 3))
    client = client_for(box, tokens, s)
    engine, _ = post_engine(broker, b, client, s)
    await engine.start()
    try:
        await until(lambda: box.stats.requests >= 2)  # the lookup, then the mutation
    finally:
        await engine.stop(1.0)  # shorter than the mutation: it is cut
        await client.aclose()
    note = notes(broker)[-1]
    assert note["state"] == "held"
    assert takeover_wait(note, s.xledger_settle_s, time.time()) > s.xledger_settle_s - 1.5


# --- N2 ---------------------------------------------------------------------------------


async def test_n2_a_new_consumer_group_reading_from_the_start_posts_nothing_twice(
    sandbox: tuple[XledgerSandbox, dict[str, str]],
) -> None:
    """N2 (and acceptance (a) in process): group A posts the payments; a worker with a new
    FLYT_APP_ID (no state, no notes, no commits) reads the topics from the start. Its
    enrich stage makes every payment's first evaluation again; the lookup before every
    first mutation finds them in Xledger: receipts `already_present`, nothing posted
    twice."""
    box, tokens = sandbox
    events = [e for e in generate_events(200, seed=5) if e["status"] == "Betalt"][:60]
    broker = memory_broker(replace(ONE, partitions=2))
    for e in events:
        broker.append(T.payments, e["payment_id"].encode(), json.dumps(e).encode())
    first = replace(ONE, partitions=2, app_id="group-a")
    async with memory_pipeline(broker, first, client_for(box, tokens, first)):
        await until(lambda: len(bodies(broker, T.receipts)) >= 1, 20)
        await until(lambda: _settled(broker, first), 30)
    counts = ledger_counts(box)
    assert counts and set(counts.values()) == {1}
    second = replace(first, app_id="group-b")
    async with memory_pipeline(broker, second, client_for(box, tokens, second)):
        await until(lambda: _settled(broker, second), 30)
    assert ledger_counts(box) == counts  # not one line more
    again = [r for r in bodies(broker, T.receipts) if r["already_present"]]
    assert {r["payment_id"] for r in again} == {r["payment_id"] for r in bodies(broker, T.receipts)}


def _settled(broker: Any, s: Settings) -> bool:
    """Every payment-status and submission record committed by the group."""
    group = broker.group(s.app_id)
    return all(
        (group.committed.get(TopicPartition(topic, p)) or 0) == len(broker.read(topic, p))
        for topic in (s.topics.payments, s.topics.submissions)
        for p in range(broker.partitions(topic))
    )


# --- N3 ---------------------------------------------------------------------------------


async def test_n3_a_mutation_stored_after_the_deadline_is_found_by_the_lookup_after_the_settle_time(
    sandbox: tuple[XledgerSandbox, dict[str, str]],
) -> None:
    """N3: Xledger stores the batch after the worker stopped waiting for it (2 s after it
    arrived; the request deadline is 1 s). The lookup waits the settle time (3 s) and
    finds it: a receipt, the voucher in Xledger once. On 15664b2 the lookup ran 0.25 s
    after the deadline, found nothing, and the batch was posted again."""
    box, tokens = sandbox
    s = replace(ONE, xledger_settle_s=3.0)
    box.faults = FaultProfile(store_after_s=2.0)
    b, broker = book(), memory_broker(s)
    subs = submissions(b, FAST, 4)
    publish(broker, subs)
    async with running(broker, b, client_for(box, tokens, s), s):
        await until(lambda: committed(broker) == 4, 20)
        receipts = bodies(broker, T.receipts)
        assert len(receipts) == 4 and all(r["already_present"] for r in receipts)
        await asyncio.sleep(2.5)  # a second mutation, had one been sent, is stored by now
    assert box.stats.faults["store-late"] == 1  # one mutation ever reached Xledger
    assert sorted(posted(box)) == twice_each(subs)


# --- N4 ---------------------------------------------------------------------------------


class Recorded:
    """The stage's context, with the order of what the fence does written down."""

    def __init__(self, ctx: Any, events: list[str]) -> None:
        self.ctx = ctx
        self.events = events

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ctx, name)

    async def write(self, outputs: Any, changes: Any = (), done: Any = ()) -> set[int]:
        changes = list(changes)
        noted = any(isinstance(c, StateChange) and c.store == POSTING for c in changes)
        answer: set[int] = await self.ctx.write(outputs, changes, done)
        if noted:
            self.events.append("note")
        return answer

    async def confirm(self, lane: Any) -> bool:
        answer: bool = await self.ctx.confirm(lane)
        self.events.append("confirm")
        return answer


async def test_n4_the_fence_confirms_membership_after_its_note_and_sends_under_the_lease(
    sandbox: tuple[XledgerSandbox, dict[str, str]],
) -> None:
    """N4: the note on the broker (which may take a while: here its changelog refuses
    writes for a second) comes first, then membership is confirmed, then the mutation
    leaves, before the lease the note names has ended. On 15664b2 the fence confirmed
    membership first and stamped `mutation_at` before a write of unbounded length."""
    from tests.pipeline.memory import stage_engine
    from worker.pipeline.post_stage import PostStage

    box, tokens = sandbox
    b, broker = book(), memory_broker(ONE)
    events: list[str] = []
    stored: list[tuple[float, Any]] = []

    def on_stored(batch: Any) -> None:
        events.append("stored")
        stored.append((time.time(), notes(broker)[-1].get("until")))

    box.on_stored = on_stored
    client = client_for(box, tokens)
    engine, _ = stage_engine(
        broker, ONE, lambda ctx: PostStage(ONE, b, client, Recorded(ctx, events))
    )
    await engine.start()
    try:
        await until(lambda: "note" in events)  # the new holder's first note
        events.clear()
        changelog = changelog_topic(ONE, POSTING)
        broker.refusing.add(changelog)  # the next note takes a while
        asyncio.get_running_loop().call_later(1.0, broker.refusing.discard, changelog)
        publish(broker, submissions(b, FAST, 2))
        await until(lambda: committed(broker) == 2, 20)
    finally:
        await engine.stop(3.0)
        await client.aclose()
    assert events.index("note") < events.index("confirm") < events.index("stored")
    assert all(until is not None and at < until for at, until in stored)


# --- N6 ---------------------------------------------------------------------------------


async def test_n6_a_dead_lettered_payment_read_again_before_the_commit_is_not_posted(
    sandbox: tuple[XledgerSandbox, dict[str, str]],
) -> None:
    """N6: a payment dead-lettered after retries (its mutation never reached Xledger),
    then read again after a crash before the commit, with Xledger healthy again: its
    outcome stands (one outcome for ever). On 15664b2 it was posted: a dead letter and a
    receipt."""
    box, tokens = sandbox
    b, broker = book(), memory_broker(ONE)
    [sub] = submissions(b, FAST, 1)
    publish(broker, [sub])

    def no_connection_for_mutations(request: httpx.Request) -> httpx.Response | None:
        if json.loads(request.content)["query"].lstrip().startswith("mutation"):
            raise httpx.ConnectError("connection refused")
        return None

    failing = XledgerClient(
        SecretStore(tokens),
        policy=UrlPolicy(allow_sandbox=True),
        endpoint_override=box.url,
        settings=replace(
            client_settings(ONE), max_attempts=2, backoff_base_s=0.01, outage_patience_s=0.0
        ),
        transport=Forwarding(no_connection_for_mutations),
    )
    async with running(broker, b, failing):
        await until(lambda: committed(broker) == 1)
        [dead] = records(broker, T.dlq)
        assert dead.header("dlq.stage") == b"post"
    broker.group(ONE.app_id).committed.clear()  # the crash came before the commit
    async with running(broker, b, client_for(box, tokens)):
        await until(lambda: committed(broker) == 1)
        await asyncio.sleep(0.3)
    assert posted(box) == [] and records(broker, T.receipts) == []
    assert len(records(broker, T.dlq)) == 1


# --- N7 ---------------------------------------------------------------------------------


async def test_n7_r18_looks_the_payment_up_where_it_was_evaluated_before_evaluating_it_again() -> (
    None
):
    """N7: a payment posted to entity A just before a crash (its receipt never written);
    the tenant's snapshot then moved to entity B (another URL, token and Motkonto). Read
    again, it is looked up at A, where it was evaluated for: a receipt naming A, and
    nothing posted to B. On 15664b2 it was evaluated again first and posted to B too."""
    snapshots = demo_snapshot_dicts()
    old = RegisterSnapshot.model_validate(next(d for d in snapshots if d["tenant_id"] == FAST))
    moved_dict = copy.deepcopy(old.model_dump(mode="json"))
    moved_dict["version"] += 1
    moved_dict["settings"].update(
        url="https://xledger.net/graphql", token_ref="t-vestfold-b", counter_account="1921"
    )
    moved = RegisterSnapshot.model_validate(moved_dict)
    box, tokens = sandbox_for([old, moved], "entity", 60_000_001)  # A, then B
    _, entity_b = box.entities()
    entity_b.name = "entity-b"  # another entity: its own ledger and its own lookups
    await box.start()
    try:
        b = book(snapshots)
        [sub] = submissions(b, FAST, 1)
        assert sub.token_ref == old.settings.token_ref
        async with client_for(box, tokens) as c:  # posted to A before the crash
            done = await c.post(Target(FAST, old.settings.url, old.settings.token_ref), [sub])
            assert len(done.receipts) == 1
        assert b.offer(moved).accepted
        broker = memory_broker(ONE)
        publish(broker, [sub])
        async with running(broker, b, client_for(box, tokens)):
            await until(lambda: (committed(broker) or 0) >= 1)
            await asyncio.sleep(0.5)  # a second submission, had one been written, is posted
        [receipt] = bodies(broker, T.receipts)
        assert receipt["already_present"] and receipt["xledger_url"] == old.settings.url
        assert receipt["token_ref"] == old.settings.token_ref
        assert [(x["tenant"], x["extIdentifier"]) for x in box.ledger()] == [
            (FAST, x.extIdentifier)
            for x in sub.lines  # entity A's, and nothing at B
        ]
        assert len(records(broker, T.submissions)) == 1  # not written again for B
    finally:
        await box.stop()


# --- N9 ---------------------------------------------------------------------------------


async def test_n9_a_revoke_waits_for_the_mutation_of_every_loop_of_the_partition(
    sandbox: tuple[XledgerSandbox, dict[str, str]],
) -> None:
    """N9: tenant X's loop on partition 0 has a mutation on its way when a submission of X
    arrives on partition 1 under another key: it gets X's loop of that lane, and X's loop
    on partition 0 stays known. Revoking partition 0 waits for that mutation and writes
    its receipt before the hand-over's commit. On 15664b2 the new record replaced X's loop,
    and the revoke never waited for the old one: the partition was handed over cleanly
    with a mutation in flight."""
    box, tokens = sandbox
    s = replace(
        ONE, partitions=2, xledger_request_deadline_s=5.0, xledger_settle_s=6.0, stop_grace_s=15.0
    )
    box.faults = FaultProfile(store_after_s=1.5)
    b, broker = book(), memory_broker(s)
    first, other = submissions(b, FAST, 2)
    publish(broker, [first])
    async with running(broker, b, client_for(box, tokens, s), s) as (engine, _):
        await until(lambda: box.stats.requests >= 2)  # its mutation is on its way
        where = [("flyt.source", f"{T.payments}/1@0".encode())]
        broker.append(T.submissions, b"t-lillevik", other.model_dump_json().encode(), where, 1)
        await asyncio.sleep(0.3)  # read by the other lane's loop, and routed to X's
        await engine.on_revoked({TopicPartition(T.submissions, 0)})
        assert first.payment_id in {r["payment_id"] for r in bodies(broker, T.receipts)}
        assert notes_of(broker, s, 0)[-1]["state"] == "released"


def notes_of(broker: Any, s: Settings, partition: int) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in broker.read(changelog_topic(s, POSTING), partition)]


# --- an Xledger that never answers in time ----------------------------------------------


async def test_a_payment_never_answered_in_time_is_dead_lettered_after_the_limit_never_posted(
    sandbox: tuple[XledgerSandbox, dict[str, str]],
) -> None:
    """Xledger answers every mutation only after the request deadline, and refuses this
    batch (an account it does not know) when it gets to it: the worker never hears the
    refusal. Each time, after the settle time, the lookup finds nothing: after
    UNKNOWN_LIMIT such mutations the payments are not sent again; the last lookup finds
    them absent, and they are dead-lettered (sent again by hand), never posted, never
    asked for ever."""
    from worker.pipeline.held_payments import UNKNOWN_LIMIT

    box, tokens = sandbox
    box.faults = FaultProfile(store_after_s=1.5)  # past ONE's 1 s deadline
    b, broker = book(), memory_broker(ONE)
    good, bad = submissions(b, FAST, 2)
    lines = [bad.lines[0].model_copy(update={"account": "99999"}), bad.lines[1]]
    bad = bad.model_copy(update={"lines": lines})
    publish(broker, [good, bad])
    async with running(broker, b, client_for(box, tokens)):
        await until(lambda: committed(broker) == 2, 30)
        await asyncio.sleep(2.0)  # a mutation still to be stored is stored by now
    assert box.stats.faults["store-late"] == UNKNOWN_LIMIT  # arrived, never more
    assert posted(box) == []
    dead = records(broker, T.dlq)
    assert sorted(d.key or b"" for d in dead) == [FAST.encode()] * 2
    assert {d.header("dlq.reason") for d in dead} == {b"unknown_outcome"}
    assert records(broker, T.receipts) == []
