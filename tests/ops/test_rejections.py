"""Finance staff list rejected payments and resend them (`python -m worker rejections …`):
the resend is the original Betalt event again, marked `flyt.resend_by`, which the enrich
stage evaluates although the payment was handled (R13); never posted twice (R14)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.brokers import Broker
from tests.factories import GAP_CATEGORY, filling_the_gap, with_register_gap
from tests.ops.helpers import acli, cli, json_lines, ops_settings, records, rejection_of, send
from tests.sandboxes import entity_of, sandbox_for
from tests.stream_helpers import prepare
from tests.waiting import until, until_async
from worker.contracts import RegisterSnapshot
from worker.contracts.headers import RESEND_BY
from worker.demo.events import generate_events
from worker.demo.snapshots import demo_snapshot_dicts, demo_snapshots
from worker.devenv.feed import event_records, publish
from worker.engine.topics import ensure_topics
from worker.pipeline.payment_state import REJECTED, PaymentStates
from worker.pipeline.topics import HANDLED, PENDING, topic_specs
from worker.pipeline.wiring import Pipeline
from worker.runtime import make_client


def betalt(seed: int, tenant: str = "t-lillevik") -> dict[str, Any]:
    return next(
        e
        for e in generate_events(200, seed=seed)
        if e["status"] == "Betalt" and e["tenant_id"] == tenant
    )


# --- the enrich stage honours the resend mark (in-process) -------------------------------------


async def test_a_resend_marked_event_is_evaluated_again_an_unmarked_one_is_a_duplicate() -> None:
    """On the engine's memory backend: R17 makes a second Betalt event a duplicate, but a
    resent one (marked `flyt.resend_by`, R13) is evaluated again."""
    from tests.pipeline.memory import (
        S,
        bodies,
        book,
        committed_all,
        enrich_engine,
        memory_broker,
    )

    b, broker = book(), memory_broker()
    engine, _ = enrich_engine(broker, b)
    event = with_register_gap(betalt(3))
    key = (event["tenant_id"], event["payment_id"])
    value = json.dumps(event).encode()

    def send_event(headers: list[tuple[str, bytes]] = ()) -> None:  # type: ignore[assignment]
        broker.append(S.topics.payments, key[1].encode(), value, headers, partition=0)

    def handled() -> str | None:
        return PaymentStates(0, engine.store(HANDLED, 0), engine.store(PENDING, 0)).handled_as(key)

    def waiting() -> bool:
        states = PaymentStates(0, engine.store(HANDLED, 0), engine.store(PENDING, 0))
        return bool(states.waiting("t-lillevik"))

    await engine.start()
    try:
        send_event()
        await until(lambda: committed_all(broker, S, S.topics.payments))
        assert handled() == REJECTED and len(bodies(broker, S.topics.rejections)) == 1
        send_event()  # R17: a second Betalt event is a duplicate
        await until(lambda: committed_all(broker, S, S.topics.payments))
        assert len(bodies(broker, S.topics.rejections)) == 1
        send_event([(RESEND_BY, b"u-17")])
        await until(lambda: committed_all(broker, S, S.topics.payments))
        rejections = bodies(broker, S.topics.rejections)
        assert len(rejections) == 2  # evaluated again: still a gap, so a fresh rejection
        assert rejections[-1]["reason"] == "MISSING_ACCOUNT"
        assert waiting()  # still waiting for R16

        fixed = filling_the_gap(
            next(d for d in demo_snapshot_dicts() if d["tenant_id"] == "t-lillevik")
        )
        assert b.offer(RegisterSnapshot.model_validate(fixed)).accepted
        send_event([(RESEND_BY, b"u-17")])
        await until(lambda: committed_all(broker, S, S.topics.payments))
        assert [s["payment_id"] for s in bodies(broker, S.topics.submissions)] == [key[1]]
        assert handled() == "submitted"
        assert not waiting()  # posts now: R16 must not send it again
    finally:
        await engine.stop(2.0)


# --- list, on a real broker --------------------------------------------------------------------


@pytest.mark.integration
async def test_list_shows_code_message_since_and_waiting_or_posted(broker: Broker) -> None:
    s = ops_settings(broker, "rejlist")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    lillevik = next(d for d in demo_snapshot_dicts() if d["tenant_id"] == "t-lillevik")
    waiting, posted = with_register_gap(betalt(3)), with_register_gap(betalt(4))
    for e in (waiting, posted):
        await send(broker, s.topics.rejections, e["payment_id"].encode(), rejection_of(e, lillevik))
    receipt = {
        "schema_version": 1,
        "tenant_id": "t-lillevik",
        "payment_id": posted["payment_id"],
        "lines": [{"extIdentifier": f"flyt:t-lillevik:{posted['payment_id']}:1", "dbId": 7}],
        "posted_at": datetime.now(UTC).isoformat(),
        "batch_id": "b-1",
    }
    await send(broker, s.topics.receipts, b"t-lillevik", json.dumps(receipt).encode())

    rows = {
        r["payment_id"]: r
        for r in json_lines(cli(broker, s, "rejections", "list", "--json").stdout)
    }
    assert rows[waiting["payment_id"]]["state"] == "waiting"
    assert rows[posted["payment_id"]]["state"] == "posted"
    row = rows[waiting["payment_id"]]
    assert (
        row["code"] == "MISSING_ACCOUNT" and row["retryable"] and row["tenant_id"] == "t-lillevik"
    )
    assert GAP_CATEGORY in row["message"] and "Betalingstyper" in row["message"]  # Norwegian
    assert row["rejected_since"]

    only = json_lines(cli(broker, s, "rejections", "list", "--json", "--state", "waiting").stdout)
    assert [r["payment_id"] for r in only] == [waiting["payment_id"]]
    table = cli(broker, s, "rejections", "list")
    assert table.returncode == 0 and "1 waiting, 1 posted since" in table.stdout
    none = cli(broker, s, "rejections", "list", "--code", "GROUP_CONFLICT")
    assert none.returncode == 3 and "no rejected payment matches" in none.stderr


# --- resend, through the worker ----------------------------------------------------------------


@pytest.mark.integration
async def test_resend_reevaluates_posts_what_now_posts_and_never_posts_twice(
    broker: Broker,
) -> None:
    s = ops_settings(broker, "resend")
    snapshots = demo_snapshot_dicts()
    await prepare(s, snapshots)
    await ensure_topics(broker.bootstrap, topic_specs(s))
    # Lillevik's Xledger does not know VAT code 25 at first: Xledger refuses the posting.
    sandbox, tokens = sandbox_for(demo_snapshots(), "resend-test", 43_000_000, seed=5)
    lillevik = entity_of(sandbox, "t-lillevik")
    lillevik.tax_rules.discard("25")
    await sandbox.start()
    s = replace(s, sandbox=True, xledger_endpoint_override=sandbox.url, post_batch_window_s=0.05)
    pipeline = Pipeline(s, broker.bootstrap, make_client(s, tokens))
    t = s.topics
    refused = betalt(8)
    refused["payment"]["vat_code"] = "25"
    gap = with_register_gap(betalt(9))
    assert refused["payment_id"] != gap["payment_id"]

    def outcomes(payment: str) -> tuple[list[dict], list[dict]]:
        got = records(broker, t.receipts, t.rejections)
        mine = [
            [b for r in got[topic] if (b := r.json()) and b["payment_id"] == payment]
            for topic in (t.receipts, t.rejections)
        ]
        return mine[0], mine[1]

    async def until_outcomes(payment: str, receipts: int, rejections: int) -> None:
        async def check() -> bool:
            got = await asyncio.to_thread(outcomes, payment)
            return (len(got[0]), len(got[1])) == (receipts, rejections)

        await until_async(check, 60, f"{payment}: {receipts} receipt(s), {rejections} rejection(s)")

    def ledger(payment: str) -> list[dict]:
        return [x for x in sandbox.ledger() if f":{payment}:" in x["extIdentifier"]]

    resend = ("rejections", "resend", "--tenant", "t-lillevik", "--actor", "u-17")
    try:
        await pipeline.start()
        await publish(broker.bootstrap, t.payments, event_records([refused, gap]))
        await until_outcomes(refused["payment_id"], 0, 1)
        await until_outcomes(gap["payment_id"], 0, 1)

        denied = await acli(broker, s, *resend, "--all-waiting", "--role", "Innstillinger", "--yes")
        assert denied.returncode == 4 and "Økonomi" in denied.stderr

        # Finance adds the VAT code in Xledger, then resends every waiting payment.
        lillevik.tax_rules.add("25")
        dry = await acli(broker, s, *resend, "--all-waiting", "--role", "Økonomi", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "2 of 2 payment(s) of t-lillevik would be resent" in dry.stdout
        assert "rejected again (v1): MISSING_ACCOUNT" in dry.stdout
        out = await acli(broker, s, *resend, "--all-waiting", "--role", "Økonomi", "--yes")
        assert out.returncode == 0, out.stderr
        await until_outcomes(refused["payment_id"], 1, 1)  # posted now
        # Evaluated again: still the gap, a fresh rejection.
        await until_outcomes(gap["payment_id"], 0, 2)
        assert len(ledger(refused["payment_id"])) == 2 and not ledger(gap["payment_id"])

        # Again: the posted payment is skipped; the waiting one is evaluated once more.
        again = await acli(broker, s, *resend, "--all-waiting", "--role", "Økonomi", "--yes")
        assert again.returncode == 0, again.stderr
        await until_outcomes(gap["payment_id"], 0, 3)
        only_posted = await acli(
            broker, s, *resend, "--payment", refused["payment_id"], "--role", "Økonomi", "--yes"
        )
        assert only_posted.returncode == 3 and "already posted" in only_posted.stdout

        # Even a resend that races past that check does not post twice: the worker finds
        # the lines in Xledger and answers with a receipt for them.
        await send(
            broker,
            t.payments,
            refused["payment_id"].encode(),
            json.dumps(refused).encode(),
            [(RESEND_BY, b"u-17")],
        )
        await until_outcomes(refused["payment_id"], 2, 1)
        receipts, _ = outcomes(refused["payment_id"])
        assert receipts[-1]["already_present"] and len(ledger(refused["payment_id"])) == 2

        audit = [r.json() for r in records(broker, t.audit)[t.audit]]
        assert [a["outcome"] for a in audit if a] == ["refused", "done", "done"]
        assert all(a and a["action"] == "rejections.resend" for a in audit)
    finally:
        await pipeline.stop()
        await pipeline.client.aclose()
        await sandbox.stop()
