"""The streaming worker on a real broker (Tansu here; Apache Kafka where Docker answers)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.brokers import Broker
from tests.factories import filling_the_gap, with_register_gap
from tests.ledger import assert_ledger_exactly_once
from tests.processes import free_port, stop_process, subprocess_env
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
from worker.core.register_book import RegisterBook
from worker.demo.events import generate_events
from worker.demo.harness import start_demo_sandbox
from worker.demo.snapshots import demo_snapshot_dicts, demo_snapshots
from worker.demo.watcher import OutcomeWatcher
from worker.devenv.feed import event_records, publish, snapshot_records
from worker.devenv.sandbox import XledgerSandbox, held_lines, lines_by_payment
from worker.engine.kafka import KafkaReader
from worker.engine.lag import group_positions
from worker.pipeline.register_cache import RegisterCache
from worker.pipeline.wiring import Pipeline
from worker.runtime import make_client
from worker.xledger.secrets import env_name

pytestmark = pytest.mark.integration


# --- acceptance: the demo command ---------------------------------------------------------


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "faults"])
def test_demo_3000_events_accounted_posted_once_few_requests(
    broker: Broker, tmp_path: Path, faults: bool
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    args = [
        sys.executable,
        "-m",
        "worker",
        "demo",
        "--events",
        "3000",
        "--bad",
        "30",
        "--ledger-out",
        str(ledger),
        "--bootstrap",
        broker.bootstrap,
        "--timeout",
        "240",
    ]
    # The sandbox stores a mutation before it fails the answer, and hangs 5 s at most: a
    # 5 s request deadline and as much settle time keep every guarantee, and the test
    # short (the defaults, 15 s and 60 s, would only slow it down).
    env = subprocess_env({"FLYT_XLEDGER_REQUEST_DEADLINE_S": "6", "FLYT_XLEDGER_SETTLE_S": "6"})
    proc = subprocess.run(
        args + (["--faults"] if faults else []),
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\ndemo ({'faults' if faults else 'clean'}): {summary}")
    assert summary["events"] == 3030 and summary["unaccounted"] == 0
    assert summary["dead_lettered"] >= 30
    lines = [json.loads(x) for x in ledger.read_text().splitlines()]
    vouchers = lines_by_payment(held_lines(lines))
    assert len(vouchers) == summary["posted"]
    assert_ledger_exactly_once(lines, set(vouchers))
    assert summary["xledger_requests"] / summary["posted"] <= 0.05


# --- the register cache -----------------------------------------------------------------


async def test_every_cache_holds_every_tenant_and_refuses_bad_snapshots(broker: Broker) -> None:
    s = unique_settings(broker, "cache")
    snapshots = demo_snapshot_dicts()
    bad = copy.deepcopy(snapshots[0])
    bad["version"] = 99
    bad["settings"]["url"] = "https://evil.example/graphql"
    await prepare(s, [*snapshots, bad])
    caches = [
        RegisterCache(KafkaReader(broker.bootstrap), s.topics.registers, RegisterBook())
        for _ in "ab"
    ]
    for cache in caches:
        await cache.start()
    try:
        for cache in caches:
            await cache.wait_ready(30)
            assert cache.book.tenants() == sorted(d["tenant_id"] for d in snapshots)
            assert cache.book.version("t-vestfold-bv") == 1  # v99 refused: v1 stays in force
        newer = copy.deepcopy(snapshots[1])
        newer["version"] = 2
        await publish(broker.bootstrap, s.topics.registers, snapshot_records([newer]))

        async def both_follow() -> bool:
            return all(c.book.version("t-lillevik") == 2 for c in caches)

        await until_async(both_follow, 20, "both caches to follow the topic")
    finally:
        for cache in caches:
            await cache.stop()


# --- R16: a newer snapshot fills the gap ---------------------------------------------------


async def posted_accounts(
    watcher: OutcomeWatcher, sandbox: XledgerSandbox, key: tuple[str, str], what: str
) -> list[str]:
    """Wait until the payment is posted; the accounts of its lines in the ledger."""

    async def posted() -> bool:
        await watcher.poll()
        return key in watcher.posted

    await until_async(posted, 60, what)
    prefix = f"flyt:{key[0]}:{key[1]}:"
    return [x["account"] for x in sandbox.ledger() if x["extIdentifier"].startswith(prefix)]


def reiseutgifter_event() -> dict[str, Any]:
    """A Lillevik Betalt event whose category is not in its Betalingstyper (v1)."""
    return with_register_gap(
        next(
            e
            for e in generate_events(50, seed=5)
            if e["status"] == "Betalt" and e["tenant_id"] == "t-lillevik"
        )
    )


async def test_r16_rejected_payment_is_posted_after_a_snapshot_fills_the_gap(
    broker: Broker,
) -> None:
    s = unique_settings(broker, "r16")
    snapshots = demo_snapshot_dicts()
    await prepare(s, snapshots)
    sandbox, tokens = await start_demo_sandbox()
    s = replace(s, sandbox=True, xledger_endpoint_override=sandbox.url, post_batch_window_s=0.05)
    pipeline = Pipeline(s, broker.bootstrap, make_client(s, tokens))
    watcher = OutcomeWatcher(broker.bootstrap, s)
    event = reiseutgifter_event()  # MISSING_ACCOUNT
    try:
        await pipeline.start()
        await watcher.start()
        await publish(broker.bootstrap, s.topics.payments, event_records([event]))
        key = (event["tenant_id"], event["payment_id"])
        await watch_until(watcher, {key}, 60)
        assert watcher.rejected == {key} and not watcher.posted

        fixed = filling_the_gap(next(d for d in snapshots if d["tenant_id"] == "t-lillevik"))
        await publish(broker.bootstrap, s.topics.registers, snapshot_records([fixed]))

        what = "the re-evaluated payment to be posted"
        assert await posted_accounts(watcher, sandbox, key, what) == ["14700", "1950"]
        assert pipeline.handled_as(*key) == "submitted"
        assert pipeline.waiting_entry(*key) is None  # no longer waiting for a snapshot
    finally:
        await watcher.stop()
        await pipeline.stop()
        await pipeline.client.aclose()
        await sandbox.stop()


async def test_r14_a_payment_xledger_refuses_is_one_rejection_and_posts_after_a_fix(
    broker: Broker,
) -> None:
    """R14 (decided): Xledger's refusal is a rejection XLEDGER_REFUSED, not also a dead
    letter, and a newer snapshot evaluates it again (R16)."""
    s = unique_settings(broker, "refused")
    snapshots = demo_snapshot_dicts()
    # v2 maps a category to an account Xledger does not have.
    unknown = filling_the_gap(next(d for d in snapshots if d["tenant_id"] == "t-lillevik"), "14799")
    await prepare(s, snapshots)
    sandbox, tokens = await start_demo_sandbox()  # its chart: the v1 registers' accounts
    await publish(broker.bootstrap, s.topics.registers, snapshot_records([unknown]))
    s = replace(s, sandbox=True, xledger_endpoint_override=sandbox.url, post_batch_window_s=0.05)
    pipeline = Pipeline(s, broker.bootstrap, make_client(s, tokens))
    watcher = OutcomeWatcher(broker.bootstrap, s)
    event = reiseutgifter_event()  # v2 maps it to 14799, an account Xledger lacks
    key = (event["tenant_id"], event["payment_id"])
    try:
        await pipeline.start()
        await watcher.start()
        await publish(broker.bootstrap, s.topics.payments, event_records([event]))
        await watch_until(watcher, {key}, 60)
        assert watcher.rejected == {key} and not watcher.posted
        assert watcher.dead_letters == []  # one outcome: the rejection alone

        async def parked() -> bool:
            return (pipeline.waiting_entry(*key) or {}).get("version") == 2

        await until_async(parked, 30, "the refused payment to wait for a newer snapshot")

        fixed = copy.deepcopy(unknown)
        fixed["version"] = 3
        fixed["registers"]["betalingstype"][-1]["value"] = "14700"
        await publish(broker.bootstrap, s.topics.registers, snapshot_records([fixed]))

        what = "the refused payment to be posted after the fix"
        assert await posted_accounts(watcher, sandbox, key, what) == ["14700", "1950"]
        assert pipeline.waiting_entry(*key) is None
        assert watcher.dead_letters == []
    finally:
        await watcher.stop()
        await pipeline.stop()
        await pipeline.client.aclose()
        await sandbox.stop()


async def test_r16_gap_filled_while_the_worker_was_down_is_caught_up_on_restart(
    broker: Broker,
) -> None:
    s = unique_settings(broker, "r16-down")
    snapshots = demo_snapshot_dicts()
    await prepare(s, snapshots)
    sandbox, tokens = await start_demo_sandbox()
    s = replace(s, sandbox=True, xledger_endpoint_override=sandbox.url, post_batch_window_s=0.05)
    watcher = OutcomeWatcher(broker.bootstrap, s)
    event = with_register_gap(
        next(
            e
            for e in generate_events(50, seed=6)
            if e["status"] == "Betalt" and e["tenant_id"] == "t-fjordby-test"
        )
    )
    event["payment"]["vat_code"] = "0"  # Fjordby has no default VAT code
    event["payment"]["org_unit_id"] = "FB-1"  # the generator may have picked a gap here too
    event["child"]["group_ids"] = []
    key = (event["tenant_id"], event["payment_id"])
    first = Pipeline(s, broker.bootstrap, make_client(s, tokens))
    try:
        await first.start()
        await watcher.start()
        await publish(broker.bootstrap, s.topics.payments, event_records([event]))
        await watch_until(watcher, {key}, 60)
        assert watcher.rejected == {key}

        async def committed() -> bool:  # the event's offset is committed before the stop
            positions = await group_positions(broker.bootstrap, s.app_id, [s.topics.payments])
            return all(p.lag == 0 for p in positions)

        await until_async(committed, 30, "the rejected event's offset to be committed")
    finally:
        await first.stop()
        await first.client.aclose()

    fixed = filling_the_gap(next(d for d in snapshots if d["tenant_id"] == "t-fjordby-test"))
    await publish(broker.bootstrap, s.topics.registers, snapshot_records([fixed]))

    second = Pipeline(s, broker.bootstrap, make_client(s, tokens))
    try:
        await second.start()

        async def posted() -> bool:
            await watcher.poll()
            return key in watcher.posted

        await until_async(posted, 60, "the payment rejected before the downtime to be posted")
    finally:
        await watcher.stop()
        await second.stop()
        await second.client.aclose()
        await sandbox.stop()


# --- one tenant's trouble is its own ---------------------------------------------------


async def test_a_tenant_out_of_xledger_credits_holds_up_no_other_tenant(broker: Broker) -> None:
    s = unique_settings(broker, "credits")
    snapshots = demo_snapshot_dicts()
    await prepare(s, snapshots)
    sandbox, tokens = sandbox_for(demo_snapshots(), "credits-test", 42_000_000, seed=3)
    entity_of(sandbox, "t-lillevik").credits = 1
    await sandbox.start()
    s = replace(s, sandbox=True, xledger_endpoint_override=sandbox.url, post_batch_window_s=0.05)
    pipeline = Pipeline(s, broker.bootstrap, make_client(s, tokens))
    watcher = OutcomeWatcher(broker.bootstrap, s)
    events = list(generate_events(600, seed=44))
    submitted, _ = expected_outcomes(snapshots, events)
    others = {k for k in submitted if k[0] != "t-lillevik"}
    try:
        await pipeline.start()
        await watcher.start()
        await publish(
            broker.bootstrap, s.topics.payments, event_records(events), one_record_batches=False
        )

        async def others_posted() -> bool:
            await watcher.poll()
            return others <= watcher.posted

        await until_async(others_posted, 60, "the other tenants' payments to be posted")
        assert not {k for k in watcher.posted if k[0] == "t-lillevik"}  # paused, not lost
        paused = "xledger_tenant_paused"
        credits = {"reason": "credits"}
        assert REGISTRY.get_sample_value(paused, {"tenant": "t-lillevik", **credits}) == 1
        assert REGISTRY.get_sample_value(paused, {"tenant": "t-vestfold-bv", **credits}) == 0
    finally:
        await watcher.stop()
        await pipeline.stop()
        await pipeline.client.aclose()
        await sandbox.stop()


async def test_a_tenant_whose_token_is_missing_or_refused_waits_and_resumes_with_a_new_one(
    broker: Broker, tmp_path: Path
) -> None:
    """Tenant-level faults stay tenant-level: held (not dead-lettered) while the token is
    missing or refused, the other tenant goes on, and a new token resumes it by itself."""
    s = unique_settings(broker, "token")
    snapshots = demo_snapshot_dicts()
    await prepare(s, snapshots)
    sandbox, tokens = sandbox_for(demo_snapshots(), "token-test", 43_000_000, seed=4)
    await sandbox.start()
    refs = {snap.tenant_id: snap.settings.token_ref for snap in demo_snapshots()}
    real = {ref: tokens[env_name(ref)] for ref in refs.values()}  # each tenant's valid token
    (tmp_path / refs["t-vestfold-bv"]).write_text(real[refs["t-vestfold-bv"]])
    (tmp_path / refs["t-fjordby-test"]).write_text("revoked-token-0123456789")  # refused
    # t-lillevik: no token at all yet
    s = replace(
        s,
        sandbox=True,
        xledger_endpoint_override=sandbox.url,
        post_batch_window_s=0.05,
        token_dir=tmp_path,
        token_recheck_s=0.2,
    )
    pipeline = Pipeline(s, broker.bootstrap, make_client(s, {}))
    watcher = OutcomeWatcher(broker.bootstrap, s)
    events = list(generate_events(400, seed=45))
    submitted, _ = expected_outcomes(snapshots, events)
    held = {"t-lillevik", "t-fjordby-test"}
    paused = "xledger_tenant_paused"

    def paused_now(tenant: str) -> float | None:
        return REGISTRY.get_sample_value(paused, {"tenant": tenant, "reason": "token"})

    try:
        await pipeline.start()
        await watcher.start()
        await publish(
            broker.bootstrap, s.topics.payments, event_records(events), one_record_batches=False
        )

        def done() -> set[tuple[str, str]]:  # (the sandbox refuses a few: rejected, R14)
            return watcher.posted | watcher.rejected

        async def others_posted() -> bool:
            await watcher.poll()
            return {k for k in submitted if k[0] not in held} <= done()

        await until_async(others_posted, 60, "the tenant with a valid token to be posted")

        async def both_paused() -> bool:
            return all(paused_now(t) == 1 for t in held)

        await until_async(both_paused, 30, "both tenants paused for their token")
        await watcher.poll()
        assert not {k for k in watcher.posted if k[0] in held}  # held, not lost ...
        assert watcher.dead_letters == []  # ... and not dead-lettered

        for tenant in held:  # the operator puts valid tokens in place
            (tmp_path / refs[tenant]).write_text(real[refs[tenant]])

        async def all_posted() -> bool:
            await watcher.poll()
            return submitted <= done()

        await until_async(all_posted, 90, "the held tenants to resume by themselves")
        assert {k for k in watcher.posted if k[0] in held}
        assert watcher.dead_letters == []
        assert all(paused_now(t) == 0 for t in held)
        assert_ledger_exactly_once(sandbox.ledger(), watcher.posted)
    finally:
        await watcher.stop()
        await pipeline.stop()
        await pipeline.client.aclose()
        await sandbox.stop()


# --- two workers -------------------------------------------------------------------------


async def test_two_workers_both_hold_every_snapshot_and_split_the_payments(
    broker: Broker,
    tmp_path: Path,
) -> None:
    s = unique_settings(broker, "two")
    snapshots = demo_snapshot_dicts()
    await prepare(s, snapshots)
    sandbox, tokens = await start_demo_sandbox()
    ports = [free_port(), free_port()]
    procs = [
        start_worker(worker_env(broker, s, tokens, sandbox.url, port), tmp_path / f"w{i}.log")
        for i, port in enumerate(ports)
    ]
    watcher = OutcomeWatcher(broker.bootstrap, s)
    try:

        async def settled() -> bool:
            samples = [await scrape(p) for p in ports]
            shares = [
                metric(x, "flyt_assigned_partitions", topic=s.topics.payments) for x in samples
            ]
            return all(n > 0 for n in shares) and sum(shares) == s.partitions

        await until_async(settled, 90, "both workers to own payment partitions")
        for port in ports:  # every worker holds every tenant's snapshot
            samples = await scrape(port)
            for snap in snapshots:
                assert (
                    metric(samples, "flyt_register_snapshot_version", tenant=snap["tenant_id"])
                    == snap["version"]
                )

        events = list(generate_events(1500, seed=21))
        submitted, rejected = expected_outcomes(snapshots, events)
        await watcher.start()
        await publish(
            broker.bootstrap, s.topics.payments, event_records(events), one_record_batches=False
        )
        await watch_until(watcher, submitted | rejected, 120)

        samples = [await scrape(p) for p in ports]
        per_worker = [
            sum(
                metric(x, "flyt_events_total", outcome=o)
                for o in ("submitted", "rejected", "ignored", "duplicate", "invalid")
            )
            for x in samples
        ]
        print(f"\nevents per worker: {per_worker}")
        assert all(n > 0 for n in per_worker)  # split between them …
        assert sum(per_worker) == len(events)  # … and none processed twice
        assert watcher.posted | watcher.rejected == submitted | rejected
        assert_ledger_exactly_once(sandbox.ledger(), watcher.posted)
    finally:
        for proc in procs:
            stop_process(proc)
        await watcher.stop()
        await sandbox.stop()


# --- a failure explains itself ------------------------------------------------------------


async def test_a_missing_outcome_is_explained_with_positions_and_offsets(broker: Broker) -> None:
    s = unique_settings(broker, "explain")
    await prepare(s, demo_snapshot_dicts())
    event = next(e for e in generate_events(20, seed=9) if e["status"] == "Betalt")
    key = (event["tenant_id"], event["payment_id"])
    watcher = OutcomeWatcher(broker.bootstrap, s)  # no worker runs: the outcome never comes
    try:
        await watcher.start()
        await publish(broker.bootstrap, s.topics.payments, event_records([event]))
        with pytest.raises(AssertionError) as failure:
            await watch_until(watcher, {key}, 3)
    finally:
        await watcher.stop()
    text = str(failure.value)
    assert f"{key[0]} {key[1]}: {s.topics.payments}:" in text  # where its event sits
    assert "committed=None" in text and "end=1" in text  # the group never consumed it
    assert "when the wait began" in text


# --- restart mid-stream ----------------------------------------------------------------------


async def test_worker_killed_mid_stream_loses_nothing_and_posts_nothing_twice(
    broker: Broker,
    tmp_path: Path,
) -> None:
    s = unique_settings(broker, "restart")
    snapshots = demo_snapshot_dicts()
    await prepare(s, snapshots)
    sandbox, tokens = await start_demo_sandbox()
    port = free_port()
    env = worker_env(broker, s, tokens, sandbox.url, port)
    log = tmp_path / "worker.log"
    events = list(generate_events(3000, seed=33))
    submitted, rejected = expected_outcomes(snapshots, events)
    watcher = OutcomeWatcher(broker.bootstrap, s)
    proc = start_worker(env, log)
    try:
        await watcher.start()
        # Two thirds before the kill, the rest after: the kill always lands mid-stream,
        # with no race against a worker that might have finished first. (This variant
        # found issue 14's second cause: tests/test_faust_consumer.py.)
        records = event_records(events)
        cut = 2 * len(records) // 3
        await publish(broker.bootstrap, s.topics.payments, records[:cut], one_record_batches=False)

        async def some_posted() -> bool:
            await watcher.poll()
            return len(watcher.posted) >= 200

        await until_async(some_posted, 90, "the first receipts")
        proc.kill()  # no goodbye: uncommitted offsets, unflushed state
        proc.wait()
        seen = len(watcher.posted)
        await publish(broker.bootstrap, s.topics.payments, records[cut:], one_record_batches=False)
        proc = start_worker(env, log)
        await watch_until(watcher, submitted | rejected, 180)
        total = len(submitted | rejected)
        print(f"\nkilled after {seen} receipts; all {total} outcomes after restart")
        assert watcher.posted | watcher.rejected == submitted | rejected
        assert_ledger_exactly_once(sandbox.ledger(), watcher.posted)
    finally:
        stop_process(proc)
        await watcher.stop()
        await sandbox.stop()
