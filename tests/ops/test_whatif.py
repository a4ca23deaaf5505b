"""`whatif --snapshot DRAFT.json`: what a register change would do before it is published.

The R16 example: a payment waits for a gap in Betalingstyper (MISSING_ACCOUNT); a draft
that fills the gap says it would post, with its accounting string; nothing is published.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import Broker
from tests.factories import GAP_CATEGORY, filling_the_gap, with_register_gap
from tests.ops.helpers import cli, ops_settings, records, rejection_of, send
from worker.contracts import RegisterSnapshot
from worker.core.register_index import RegisterIndex
from worker.demo.events import generate_events
from worker.demo.snapshots import demo_snapshot_dicts
from worker.devenv.feed import snapshot_records
from worker.engine.topics import ensure_topics
from worker.ops.rejections import betalt_events, read_rejections
from worker.ops.topic_reader import Record
from worker.ops.whatif import what_if
from worker.pipeline.topics import topic_specs


def lillevik() -> dict[str, Any]:
    return copy.deepcopy(next(d for d in demo_snapshot_dicts() if d["tenant_id"] == "t-lillevik"))


def betalt_events_of(tenant: str, n: int, seed: int) -> list[dict[str, Any]]:
    return [
        e
        for e in generate_events(n, seed=seed)
        if e["status"] == "Betalt" and e["tenant_id"] == tenant
    ]


def draft_filling_the_gap(account: str = "14700") -> dict[str, Any]:
    d = filling_the_gap(lillevik(), account)  # v2
    d["published_by"] = {"user_id": "u-oko-3", "roles": ["Økonomiinnstillinger"]}
    return d


def record(topic: str, offset: int, value: bytes, key: bytes | None = None) -> Record:
    return Record(topic, 0, offset, 1_000_000 + offset, key, value)


# --- the pure part ---------------------------------------------------------------------------


def test_r16_gap_filled_by_the_draft_the_waiting_payment_would_post() -> None:
    current = lillevik()
    waiting_event = with_register_gap(betalt_events_of("t-lillevik", 100, 5)[0])
    rejections = [record("rej", 0, rejection_of(waiting_event, current))]
    events = betalt_events([record("pay", 0, json.dumps(waiting_event).encode())])
    book = read_rejections(rejections, [])
    report = what_if(
        RegisterSnapshot.model_validate(draft_filling_the_gap()),
        RegisterIndex(RegisterSnapshot.model_validate(current)),
        book.waiting("t-lillevik"),
        events,
        recent=50,
    )
    assert report.accepted and report.evaluated
    [post] = report.would_post
    assert post.payment_id == waiting_event["payment_id"]
    assert post.before["outcome"] == "rejected"
    assert post.before["problems"][0]["code"] == "MISSING_ACCOUNT"
    assert post.after["outcome"] == "posts" and post.after["accounting"]["dim1"] == "14700"
    assert not report.still_failing


def test_changed_strings_and_new_failures_among_recent_payments() -> None:
    current = lillevik()
    recent = betalt_events_of("t-lillevik", 300, 6)
    records_ = [record("pay", i, json.dumps(e).encode()) for i, e in enumerate(recent)]
    category = recent[0]["payment"]["category"]
    draft = lillevik()
    draft["version"] = 2
    draft["published_by"] = {"user_id": "u-oko-3", "roles": ["Økonomiinnstillinger"]}
    for row in draft["registers"]["betalingstype"]:
        if row["category"] == category:
            row["value"] = "99999"  # a new account for one category
    report = what_if(
        RegisterSnapshot.model_validate(draft),
        RegisterIndex(RegisterSnapshot.model_validate(current)),
        [],
        betalt_events(records_),
        recent=len(recent),
    )
    changed = {o.payment_id for o in report.changed}
    same_category = {e["payment_id"] for e in recent if e["payment"]["category"] == category}
    assert changed and changed <= same_category
    assert all(o.after["accounting"]["dim1"] == "99999" for o in report.changed)
    payments = {e["payment_id"] for e in recent}  # a payment's newest event counts, once
    assert report.recent == len(payments)
    assert report.unchanged + len(report.changed) + len(report.newly_failing) + len(
        report.newly_posting
    ) == len(payments)


def test_a_draft_that_breaks_the_registers_is_refused_and_not_evaluated() -> None:
    draft = draft_filling_the_gap()
    draft["registers"]["betalingstype"].append({"category": GAP_CATEGORY, "value": "1"})  # R7
    report = what_if(
        RegisterSnapshot.model_validate(draft),
        RegisterIndex(RegisterSnapshot.model_validate(lillevik())),
        [],
        {},
        recent=10,
    )
    assert not report.accepted and not report.evaluated
    assert any("R7" in r for r in report.refusals)


# --- on a real broker ------------------------------------------------------------------------


@pytest.mark.integration
async def test_whatif_reads_the_topics_says_what_would_post_and_publishes_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    s = ops_settings(broker, "whatif")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    t = s.topics
    current = lillevik()
    [(key, value)] = snapshot_records([current])
    await send(broker, t.registers, key, value)
    waiting = with_register_gap(betalt_events_of("t-lillevik", 100, 5)[0])
    other = betalt_events_of("t-lillevik", 100, 7)[:5]
    for e in [waiting, *other]:
        await send(broker, t.payments, e["payment_id"].encode(), json.dumps(e).encode())
    await send(broker, t.rejections, waiting["payment_id"].encode(), rejection_of(waiting, current))
    draft = tmp_path / "draft.json"
    draft.write_text(json.dumps(draft_filling_the_gap(), ensure_ascii=False), "utf-8")
    topics = (t.payments, t.registers, t.submissions, t.receipts, t.rejections, t.dlq, t.audit)
    before = {k: len(v) for k, v in records(broker, *topics).items()}

    out = cli(broker, s, "whatif", "--snapshot", str(draft), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["draft_accepted"] and report["in_force_version"] == 1
    [post] = report["waiting"]["would_post"]
    assert post["payment_id"] == waiting["payment_id"]
    assert post["draft"]["accounting"]["dim1"] == "14700"
    assert report["recent"]["evaluated"] == len(other)
    assert report["recent"]["unchanged"] == len(other)  # the draft only adds a category

    text = cli(broker, s, "whatif", "--snapshot", str(draft))
    assert "would now post (1)" in text.stdout and "Nothing was published." in text.stdout
    assert {k: len(v) for k, v in records(broker, *topics).items()} == before

    stale = draft_filling_the_gap()
    stale["version"] = 1  # not newer than the snapshot in force: the worker would refuse it
    draft.write_text(json.dumps(stale, ensure_ascii=False), "utf-8")
    refused = cli(broker, s, "whatif", "--snapshot", str(draft))
    assert refused.returncode == 4 and "STALE_VERSION" in refused.stdout
    assert "would now post (1)" in refused.stdout  # the registers themselves still shown

    draft.write_text("{not json", "utf-8")
    broken = cli(broker, s, "whatif", "--snapshot", str(draft))
    assert broken.returncode == 1 and "is not JSON" in broken.stderr
    assert "Traceback" not in broken.stderr
