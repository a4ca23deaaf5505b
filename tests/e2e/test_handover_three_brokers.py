"""Hand-overs between workers on Apache Kafka with three brokers, Xledger answering 1.5 s
late (issue 18): a worker joining mid-flow, a rolling restart, R16 with three workers, and
a worker stalled past its session timeout. Each: nothing lost, nothing posted twice (the
ledger read back), one outcome per payment."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import Broker
from tests.factories import filling_the_gap, with_register_gap
from tests.ledger import assert_ledger_exactly_once
from tests.processes import free_port, stop_process
from tests.sandboxes import entity_of, sandbox_for
from tests.stream_helpers import (
    expected_outcomes,
    metric,
    prepare,
    scrape,
    start_worker,
    unique_settings,
    watch_until,
    worker_env,
)
from tests.waiting import until_async
from worker.config import Settings
from worker.demo.chaos import CampaignWatcher
from worker.demo.events import generate_events
from worker.demo.snapshots import demo_snapshot_dicts, demo_snapshots
from worker.demo.watcher import OutcomeWatcher
from worker.devenv.feed import event_records, publish, snapshot_records
from worker.devenv.sandbox import FaultProfile, XledgerSandbox
from worker.devenv.sockets import sender_of
from worker.ops.topic_reader import read_topics

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

LATE_S = 1.5  # every Xledger answer


@pytest.fixture
async def late_xledger(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[XledgerSandbox, dict[str, str]]]:
    """The sandbox with the demo tenants, every answer LATE_S late; a test's
    `@pytest.mark.sandbox(late_s=…, store_after_s=…, credits={tenant: n}, credits_reset_s=…)`
    changes that."""
    marker = request.node.get_closest_marker("sandbox")
    options = dict(marker.kwargs) if marker else {}
    credits: dict[str, int] = options.pop("credits", {})
    late_s = options.pop("late_s", LATE_S)
    faults = FaultProfile(
        slow=1.0, slow_seconds=late_s, store_after_s=options.pop("store_after_s", 0.0)
    )
    box, tokens = sandbox_for(
        demo_snapshots(), "handover-test", 70_000_000, faults=faults, **options
    )
    for tenant, n in credits.items():
        entity_of(box, tenant).credits = n
    await box.start()
    try:
        yield box, tokens
    finally:
        await box.stop()


class Workers:
    """Worker processes (`python -m worker run`), each with its log and metrics port."""

    def __init__(
        self, broker: Broker, s: Settings, box: XledgerSandbox, tokens: dict[str, str], folder: Path
    ) -> None:
        self.broker, self.s, self.box, self.tokens, self.folder = broker, s, box, tokens, folder
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.ports: dict[int, int] = {}

    def start(self, n: int, **extra: str) -> None:
        port = self.ports[n] = free_port()
        env = worker_env(self.broker, self.s, self.tokens, self.box.url or "", port)
        env.update(FLYT_LOG_FORMAT="json", **extra)
        self.procs[n] = start_worker(env, self.log(n))

    def log(self, n: int) -> Path:
        return self.folder / f"worker-{n}.log"

    async def holding(self, topic: str) -> dict[int, float]:
        """Partitions of `topic` each running worker holds, by its metrics."""
        out = {}
        for n, proc in self.procs.items():
            if proc.poll() is None:
                out[n] = metric(
                    await scrape(self.ports[n]), "flyt_assigned_partitions", topic=topic
                )
        return out

    async def settled(self, workers: int) -> None:
        async def check() -> bool:
            held = await self.holding(self.s.topics.payments)
            return (
                len(held) == workers
                and all(held.values())
                and sum(held.values()) == self.s.partitions
            )

        await until_async(check, 120, f"{workers} workers to share the partitions")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot take SIGTERM
            stop_process(proc)


@pytest.fixture
async def setup(
    kafka3: Broker,
    late_xledger: tuple[XledgerSandbox, dict[str, str]],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox]]:
    box, tokens = late_xledger
    s = unique_settings(kafka3, request.node.name[:12].replace("_", "-"), post_batch_window_s=0.1)
    await prepare(s, demo_snapshot_dicts())
    workers = Workers(kafka3, s, box, tokens, tmp_path)
    watcher = OutcomeWatcher(kafka3.bootstrap, s)
    await watcher.start()
    try:
        yield s, workers, watcher, box
    finally:
        workers.stop_all()
        await watcher.stop()


async def flow(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]], rate: float
) -> None:
    step = max(1, int(rate / 10))
    for i in range(0, len(records), step):
        await publish(bootstrap, topic, records[i : i + step], False)
        await asyncio.sleep(0.1)


@asynccontextmanager
async def flowing(
    bootstrap: str, s: Settings, events: list[dict[str, Any]], rate: float
) -> AsyncIterator[asyncio.Task[None]]:
    """The events fed at `rate` per second while the test acts; the feed is cancelled
    however the test ends."""
    feed = asyncio.create_task(flow(bootstrap, s.topics.payments, event_records(events), rate))
    try:
        yield feed
    finally:
        feed.cancel()


async def receipts_at_least(watcher: OutcomeWatcher, n: int) -> None:
    async def check() -> bool:
        await watcher.poll()
        return len(watcher.posted) >= n

    await until_async(check, 120, f"{n} receipts")


def one_outcome_each(
    watcher: OutcomeWatcher, box: XledgerSandbox, expected: set[tuple[str, str]]
) -> None:
    assert watcher.posted | watcher.rejected == expected
    assert not watcher.posted & watcher.rejected, "a payment both posted and rejected"
    assert watcher.dead_letters == []
    assert_ledger_exactly_once(box.ledger(), watcher.posted)


async def test_a_worker_joining_mid_flow_takes_partitions_without_loss_or_double(
    kafka3: Broker, setup: tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox]
) -> None:
    s, workers, watcher, box = setup
    events = list(generate_events(600, seed=181))
    submitted, rejected = expected_outcomes(demo_snapshot_dicts(), events)
    workers.start(1)
    await workers.settled(1)
    async with flowing(kafka3.bootstrap, s, events, 40) as feed:
        await receipts_at_least(watcher, 60)
        workers.start(2)  # joins while payments flow and Xledger answers slowly
        await workers.settled(2)
        await feed
        await watch_until(watcher, submitted | rejected, 120)
    one_outcome_each(watcher, box, submitted | rejected)


async def test_a_rolling_restart_mid_flow_loses_nothing_and_posts_nothing_twice(
    kafka3: Broker, setup: tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox]
) -> None:
    s, workers, watcher, box = setup
    events = list(generate_events(600, seed=182))
    submitted, rejected = expected_outcomes(demo_snapshot_dicts(), events)
    workers.start(1)
    workers.start(2)
    await workers.settled(2)
    async with flowing(kafka3.bootstrap, s, events, 40) as feed:
        await receipts_at_least(watcher, 60)
        workers.procs[1].send_signal(signal.SIGTERM)  # as a rolling deployment does
        assert await asyncio.to_thread(workers.procs[1].wait, 30) == 0  # the sandbox answers
        workers.start(3)
        await workers.settled(2)
        await feed
        await watch_until(watcher, submitted | rejected, 120)
    one_outcome_each(watcher, box, submitted | rejected)
    handed = [
        json.loads(x)
        for x in workers.log(1).read_text().splitlines()
        if "partitions_handed_over" in x
    ]
    assert handed and handed[-1]["committed"] is True  # a clean hand-over on SIGTERM


async def test_r16_with_three_workers_gives_each_waiting_payment_exactly_one_new_outcome(
    kafka3: Broker, setup: tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox]
) -> None:
    """After a snapshot that fills the gap, each waiting payment gets exactly one new
    outcome (a receipt for one new voucher, or one new rejection when the fix does not
    cure it), and payments posted before get nothing new."""
    s, workers, _, box = setup
    watcher = CampaignWatcher(kafka3.bootstrap, s)  # counts receipts and rejections each
    await watcher.start()
    snapshots = demo_snapshot_dicts()
    events = list(generate_events(400, seed=183))
    for i, e in enumerate(events):
        if e["tenant_id"] == "t-lillevik" and e["status"] == "Betalt" and i % 3 == 0:
            events[i] = with_register_gap(e)  # not in Lillevik's Betalingstyper (v1)
    submitted, rejected = expected_outcomes(snapshots, events)
    try:
        for n in (1, 2, 3):
            workers.start(n)
        await workers.settled(3)
        await publish(kafka3.bootstrap, s.topics.payments, event_records(events), False)
        await watch_until(watcher, submitted | rejected, 120)
        waiting = {k for k in watcher.rejected if k[0] == "t-lillevik"}
        fixed = filling_the_gap(next(d for d in snapshots if d["tenant_id"] == "t-lillevik"))
        # What the fix cures: the register gaps; not what Xledger itself refuses (a VAT code
        # its entity lacks), which is evaluated again and refused again: a new rejection.
        by_xledger = {k for k, why in watcher.rejections.items() if "XLEDGER_REFUSED" in why}
        cured = (waiting - by_xledger) & expected_outcomes([*snapshots, fixed], events)[0]
        assert cured, "the data has no register gap the fix fills"
        receipts = dict(watcher.receipts)
        rejections = {k: len(v) for k, v in watcher.rejections.items()}
        ledger = len(box.ledger())

        await publish(kafka3.bootstrap, s.topics.registers, snapshot_records([fixed]))

        def new_outcomes(key: tuple[str, str]) -> int:
            return (
                watcher.receipts[key]
                - receipts.get(key, 0)
                + len(watcher.rejections.get(key, []))
                - rejections.get(key, 0)
            )

        async def each_once() -> bool:
            await watcher.poll()
            return all(new_outcomes(k) >= 1 for k in waiting)

        await until_async(each_once, 120, "a new outcome for each waiting payment")
        await asyncio.sleep(3 * LATE_S)  # a second outcome, if any, would arrive meanwhile
        await watcher.poll()
        assert {k: new_outcomes(k) for k in waiting} == dict.fromkeys(waiting, 1)
        assert cured <= watcher.posted
        assert len(box.ledger()) == ledger + 2 * len(cured)  # no other voucher again
        assert_ledger_exactly_once(box.ledger(), watcher.posted)
        others = set(receipts) - waiting
        assert {k: watcher.receipts[k] for k in others} == {k: receipts[k] for k in others}
    finally:
        await watcher.stop()


async def test_a_worker_stalled_past_its_session_timeout_posts_nothing_for_partitions_it_lost(
    kafka3: Broker, setup: tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox]
) -> None:
    """SIGSTOP past the session timeout (a GC pause, a frozen VM), then SIGCONT: the zombie
    sends no mutation until it has rejoined the group; the partitions' new holder looks the
    payments up and posts what is missing, once."""
    s, workers, watcher, box = setup
    events = list(generate_events(600, seed=184))
    submitted, rejected = expected_outcomes(demo_snapshot_dicts(), events)
    stored = senders(box, workers)
    workers.start(1)
    workers.start(2)
    await workers.settled(2)
    async with flowing(kafka3.bootstrap, s, events, 40) as feed:
        await receipts_at_least(watcher, 60)
        zombie = await stall(workers, s, stored)
        await feed
        await watch_until(watcher, submitted | rejected, 180)
    one_outcome_each(watcher, box, submitted | rejected)
    assert zombie.posted_before_rejoining(stored) == [], "the zombie posted before rejoining"
    assert any(pid == zombie.pid for t, pid in stored if t < zombie.resumed), "it never posted"


def senders(box: XledgerSandbox, workers: Workers) -> list[tuple[float, int | None]]:
    """(wall time, sending worker's pid) of each batch Xledger stores, from now on."""
    stored: list[tuple[float, int | None]] = []
    box.on_stored = lambda batch: stored.append(
        (time.time(), sender_of(batch.peer_port, [p.pid for p in workers.procs.values()]))
    )
    return stored


@dataclass(frozen=True)
class Zombie:
    pid: int
    resumed: float  # wall clock at SIGCONT
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        """Its JSON log lines written since it was continued."""
        out = []
        for text in self.log.read_text().splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if datetime.fromisoformat(line["timestamp"]).timestamp() >= self.resumed:
                out.append(line)
        return out

    def rejoined(self) -> float:
        """When it was next assigned partitions (the group took it back), or never."""
        return next(
            (
                datetime.fromisoformat(line["timestamp"]).timestamp()
                for line in self.lines()
                if line.get("event") == "partitions_assigned"
            ),
            float("inf"),
        )

    def posted_before_rejoining(self, stored: list[tuple[float, int | None]]) -> list[float]:
        rejoined = self.rejoined()
        return [t for t, pid in stored if pid == self.pid and self.resumed <= t < rejoined]


async def stall(workers: Workers, s: Settings, stored: list[tuple[float, int | None]]) -> Zombie:
    """SIGSTOP the worker that has sent the most batches so far, past its session timeout
    (the group moves on), then SIGCONT it."""
    pids = Counter(pid for _, pid in stored if pid is not None)
    assert pids, "no worker has posted yet"
    pid = pids.most_common(1)[0][0]
    n = next(n for n, p in workers.procs.items() if p.pid == pid)
    os.kill(pid, signal.SIGSTOP)
    await asyncio.sleep(s.profile().session_timeout_s + 5)
    resumed = time.time()
    os.kill(pid, signal.SIGCONT)
    return Zombie(pid, resumed, workers.log(n))


@pytest.mark.sandbox(late_s=0.2, credits={"t-lillevik": 12}, credits_reset_s=4.0)
async def test_credits_running_out_while_a_third_worker_joins_post_nothing_twice(
    kafka3: Broker, setup: tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox]
) -> None:
    """Issue 19: a tenant's Xledger credits run out (its posting pauses until Xledger's
    reset), and a third worker joins meanwhile: its partition may move to the newcomer,
    which looks the payments up before it posts them. Nothing twice, nothing lost."""
    s, workers, watcher, box = setup
    events = list(generate_events(500, seed=185))
    submitted, rejected = expected_outcomes(demo_snapshot_dicts(), events)
    workers.start(1)
    workers.start(2)
    await workers.settled(2)

    async def paused_for_credits() -> bool:
        for n, port in workers.ports.items():
            if workers.procs[n].poll() is None:
                samples = await scrape(port)
                if metric(samples, "xledger_tenant_paused", tenant="t-lillevik", reason="credits"):
                    return True
        return False

    async with flowing(kafka3.bootstrap, s, events, 50) as feed:
        await until_async(paused_for_credits, 60, "t-lillevik paused for its credits")
        workers.start(3)  # joins while the tenant waits for Xledger's reset
        await workers.settled(3)
        for entity in box.entities():  # Xledger's credits are topped up
            entity.credits = None
        await feed
        await watch_until(watcher, submitted | rejected, 180)
    one_outcome_each(watcher, box, submitted | rejected)
    assert box.stats.credit_errors_sent > 0  # the credits did run out


async def test_a_worker_stalled_while_its_batch_waits_for_the_burst_budget_posts_nothing_after(
    kafka3: Broker, setup: tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox]
) -> None:
    """Issue 19: batches of one payment each (a short window) make every token wait for
    its burst budget (18 requests per 5 s); a worker SIGSTOPped there past its session
    timeout, then continued, finds its membership gone at the fence and sends nothing;
    the partitions' new holder posts the payments, each once."""
    s, workers, watcher, box = setup
    events = list(generate_events(400, seed=186))
    submitted, rejected = expected_outcomes(demo_snapshot_dicts(), events)
    stored = senders(box, workers)
    short = {"FLYT_POST_BATCH_WINDOW_S": "0.01"}
    workers.start(1, **short)
    workers.start(2, **short)
    await workers.settled(2)
    async with flowing(kafka3.bootstrap, s, events, 60) as feed:
        await receipts_at_least(watcher, 40)
        # The worker that posts (the demo's three tenants may all sit in its partitions).
        zombie = await stall(workers, s, stored)
        await feed
        await watch_until(watcher, submitted | rejected, 180)
    one_outcome_each(watcher, box, submitted | rejected)
    assert zombie.posted_before_rejoining(stored) == []
    # It woke up believing it held its partitions: the broker refused its commit, or its
    # fence refused its mutation, before it rejoined.
    fenced = {"commit_fenced", "xledger_post_abandoned"}
    assert fenced & {line.get("event") for line in zombie.lines()}, "the zombie was never fenced"


# --- issue 26: Xledger is the truth (acceptance on Apache Kafka x3) ---------------------------


def the_ledger_once_with_receipts(watcher: OutcomeWatcher, box: XledgerSandbox) -> None:
    """Nothing twice in Xledger, and every payment in Xledger has its receipt."""
    assert_ledger_exactly_once(box.ledger(), watcher.posted)
    in_xledger = {
        (line["extIdentifier"].split(":")[1], line["extIdentifier"].split(":")[2])
        for line in box.ledger()
    }
    assert in_xledger == watcher.posted


@pytest.mark.sandbox(late_s=0.1)
async def test_acceptance_a_a_new_consumer_group_reading_from_the_start_posts_nothing_twice(
    kafka3: Broker, setup: tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox]
) -> None:
    """Issue 26 (a): workers of group A post the payments of 300 events; then a worker with
    a new FLYT_APP_ID (no state, no commits of its own) reads the topics from the start.
    It makes every payment's submission again and looks each up before posting: receipts
    `already_present`, nothing twice (on 15664b2: 155 of 237 posted a second time)."""
    s, workers, watcher, box = setup
    events = list(generate_events(300, seed=261))
    submitted, rejected = expected_outcomes(demo_snapshot_dicts(), events)
    workers.start(1)
    workers.start(2)
    await workers.settled(2)
    await publish(kafka3.bootstrap, s.topics.payments, event_records(events), False)
    await watch_until(watcher, submitted | rejected, 120)
    one_outcome_each(watcher, box, submitted | rejected)
    posted, lines = set(watcher.posted), len(box.ledger())
    for n in (1, 2):
        workers.procs[n].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(workers.procs[n].wait, 40) == 0
    again = CampaignWatcher(kafka3.bootstrap, s)
    await again.start()
    try:
        workers.start(3, FLYT_APP_ID=f"{s.app_id}-new")

        async def found_again() -> bool:
            await again.poll()
            return all(again.receipts[key] >= 2 for key in posted)  # group A's and B's

        await until_async(found_again, 120, "the new group's receipt for each posted payment")
        await asyncio.sleep(2.0)  # a mutation of the new group, if any, would land now
    finally:
        await again.stop()
    assert len(box.ledger()) == lines  # not one line more
    assert_ledger_exactly_once(box.ledger(), posted)


@pytest.mark.sandbox(late_s=0.1, store_after_s=12.0)
async def test_acceptance_b_sigterm_while_xledger_takes_12_s_to_store_posts_nothing_twice(
    kafka3: Broker, setup: tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox]
) -> None:
    """Issue 26 (b): two workers; one gets SIGTERM while Xledger takes 12 s to store its
    batch. The stop lets the mutation finish and writes its receipts (the grace, 25 s,
    holds the 15 s deadline), then hands over: nothing twice, every payment in Xledger with
    its receipt (on 15664b2: 81 twice, 14 in Xledger with no receipt)."""
    s, workers, watcher, box = setup
    events = list(generate_events(150, seed=262))
    submitted, rejected = expected_outcomes(demo_snapshot_dicts(), events)
    stored = senders(box, workers)
    workers.start(1)
    workers.start(2)
    await workers.settled(2)
    await publish(kafka3.bootstrap, s.topics.payments, event_records(events), False)

    async def storing() -> bool:  # a batch is on its way into Xledger
        return box.stats.faults.get("store-late", 0) > len(stored)

    await until_async(storing, 60, "a mutation on its way")
    workers.procs[1].send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(workers.procs[1].wait, 40) == 0  # the sandbox answers meanwhile
    await watch_until(watcher, submitted | rejected, 240)
    one_outcome_each(watcher, box, submitted | rejected)
    the_ledger_once_with_receipts(watcher, box)
    handed = [
        json.loads(x)
        for x in workers.log(1).read_text().splitlines()
        if "partitions_handed_over" in x
    ]
    assert handed and all(h["clean"] for h in handed)  # no mutation was cut


@pytest.mark.sandbox(late_s=0.1, store_after_s=16.0)
async def test_acceptance_c_xledger_storing_every_mutation_past_the_deadline_posts_nothing_twice(
    kafka3: Broker, setup: tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox]
) -> None:
    """Issue 26 (c): Xledger stores every mutation 16 s after it arrives, past the worker's
    15 s deadline, whether or not anyone still waits. Each outcome is unknown; the payments
    wait the settle time (20 s here, the default 60 s) before the lookup that finds them:
    nothing twice (on 15664b2: 95 of 115 twice). The events carry no VAT code Xledger
    refuses: a refusal that only comes after the deadline is never heard, and what becomes
    of such a payment (a dead letter after UNKNOWN_LIMIT tries) is pinned in process
    (tests/pipeline/test_posting_safety.py)."""
    s, workers, watcher, box = setup
    events = [e for e in generate_events(150, seed=263) if e["payment"]["vat_code"] != "25"]
    submitted, rejected = expected_outcomes(demo_snapshot_dicts(), events)
    workers.start(1, FLYT_XLEDGER_SETTLE_S="20")
    workers.start(2, FLYT_XLEDGER_SETTLE_S="20")
    await workers.settled(2)
    await publish(kafka3.bootstrap, s.topics.payments, event_records(events), False)
    await watch_until(watcher, submitted | rejected, 240)
    one_outcome_each(watcher, box, submitted | rejected)
    the_ledger_once_with_receipts(watcher, box)
    assert box.stats.faults["store-late"] == box.stats.accepted_batches  # all stored late


# --- issue 28: a tenant paused by hand, on two workers ----------------------------------------


@pytest.mark.sandbox(late_s=0.1)
async def test_a_tenant_paused_by_hand_stops_posting_on_both_workers_and_resume_posts_it_once(
    kafka3: Broker,
    setup: tuple[Settings, Workers, OutcomeWatcher, XledgerSandbox],
) -> None:
    """`worker tenant pause T` stops T's posting on both workers within 5 s while the other
    tenants' payments flow; its payments wait (never rejected or dead-lettered for the
    pause); `resume` posts them, each once (the ledger read back); both in the audit."""
    s, workers, watcher, box = setup
    paused = "t-lillevik"
    stored: list[tuple[float, str]] = []
    box.on_stored = lambda batch: stored.append((time.time(), batch.tenant))
    events = list(generate_events(900, seed=281))
    submitted, rejected = expected_outcomes(demo_snapshot_dicts(), events)
    workers.start(1)
    workers.start(2)
    await workers.settled(2)
    who = ("--actor", "u-okinn", "--role", "Økonomiinnstillinger")
    async with flowing(kafka3.bootstrap, s, events, 40) as feed:

        async def posting() -> bool:
            return any(t == paused for _, t in stored)

        await until_async(posting, 60, f"a batch of {paused} posted")
        done = await tenant_command(kafka3, s, "pause", paused, "--reason", "sak 4711", *who)
        assert done.returncode == 0, done.stderr
        at = time.time()
        await asyncio.sleep(8.0)  # the others flow meanwhile
        later = [(t, tenant) for t, tenant in stored if t > at + 5.0]
        assert later and all(tenant != paused for _, tenant in later)
        assert not [k for k in watcher.rejected if k[0] == paused and k not in rejected]
        resumed = await tenant_command(kafka3, s, "resume", paused, *who)
        assert resumed.returncode == 0, resumed.stderr
        await feed
        await watch_until(watcher, submitted | rejected, 180)
    one_outcome_each(watcher, box, submitted | rejected)
    assert any(tenant == paused and t > at + 5.0 for t, tenant in stored)  # posted on resume
    audit = [json.loads(r.value or b"") for r in await read_all(kafka3, s.topics.audit)]
    mine = [a for a in audit if any(i.get("tenant_id") == paused for i in a["items"])]
    assert [(a["action"], a["outcome"]) for a in mine][-2:] == [
        ("tenant.pause", "done"),
        ("tenant.resume", "done"),
    ], audit


async def tenant_command(
    kafka3: Broker, s: Settings, *args: str
) -> subprocess.CompletedProcess[str]:
    """`python -m worker tenant …` as an operator runs it (the test's topics)."""
    env = worker_env(kafka3, s, {}, "", 0)
    env["FLYT_BOOTSTRAP_SERVERS"] = kafka3.bootstrap
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "worker", "tenant", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def read_all(kafka3: Broker, topic: str) -> list[Any]:
    """Every record of `topic`, read outside any group."""
    return (await asyncio.to_thread(read_topics, kafka3.bootstrap, [topic]))[topic]
