"""`worker reconcile` (issue 19), run as operators run it (a subprocess, settings from FLYT_*
variables) against a real broker and the Xledger sandbox: clean, then each kind of
difference planted, found, and only those."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.brokers import Broker
from tests.ops.helpers import acli, ops_settings, send
from tests.ops.helpers import env as ops_env
from tests.processes import free_port, stop_process
from tests.sandboxes import sandbox_for
from tests.stream_helpers import prepare
from tests.waiting import until_async
from worker.config import Settings
from worker.contracts import PaymentStatusEvent, Receipt, RegisterSnapshot, Submission
from worker.core import Enriched, evaluate
from worker.core.endpoints import UrlPolicy
from worker.core.register_book import RegisterBook
from worker.demo.events import generate_events
from worker.demo.snapshots import demo_snapshot_dicts
from worker.devenv.feed import event_records, publish
from worker.devenv.sandbox import XledgerSandbox, entity_from_snapshot
from worker.ops.when import OSLO
from worker.xledger.client import Target, XledgerClient
from worker.xledger.secrets import SecretStore, env_name

pytestmark = pytest.mark.integration

Key = tuple[str, str]


@dataclass
class World:
    """Topics with Betalt events, submissions and outcomes; the sandbox holding what was
    posted; the tokens, as the operator's environment carries them."""

    broker: Broker
    s: Settings
    sandbox: XledgerSandbox
    tokens: dict[str, str]
    book: RegisterBook
    events: dict[Key, dict[str, Any]] = field(default_factory=dict)
    posted: dict[Key, Submission] = field(default_factory=dict)
    rejected: list[Key] = field(default_factory=list)
    targets: dict[str, Target] = field(default_factory=dict)

    def client(self) -> XledgerClient:
        return XledgerClient(
            SecretStore(self.tokens),
            policy=UrlPolicy(allow_sandbox=True),
            endpoint_override=self.sandbox.url,
        )

    async def post(self, subs: list[Submission]) -> list[bytes]:
        """Posted to Xledger; their receipts (not yet on the topic)."""
        out: list[bytes] = []
        async with self.client() as c:
            for tenant in sorted({x.tenant_id for x in subs}):
                mine = [x for x in subs if x.tenant_id == tenant]
                result = await c.post(self.targets[tenant], mine)
                assert len(result.receipts) == len(mine), result
                out += [r.model_dump_json().encode() for r in result.receipts]
        return out

    async def reconcile(self, *args: str) -> tuple[int, dict[str, Any]]:
        assert self.sandbox.url
        done = await acli(
            self.broker,
            self.s,
            "reconcile",
            "--json",
            *args,
            FLYT_SANDBOX="1",
            FLYT_XLEDGER_ENDPOINT=self.sandbox.url,
            **self.tokens,
        )
        assert done.stdout, done.stderr[-3000:]
        return done.returncode, json.loads(done.stdout)

    async def betalt(self, key: Key) -> Submission:
        """A new Betalt payment (a copy of a posted one's event under `key`), on the
        payments topic; its submission, not posted."""
        model = self.events[next(k for k in sorted(self.posted) if k[0] == key[0])]
        event = dict(model, tenant_id=key[0], payment_id=key[1], event_id=f"evt-{key[1]}")
        self.events[key] = event
        await publish(self.s.bootstrap or "", self.s.topics.payments, event_records([event]))
        parsed = PaymentStatusEvent.model_validate(event)
        result = evaluate(parsed, self.book.index(key[0]))
        assert isinstance(result, Enriched)
        return result.submission(parsed, datetime.now(UTC))


@pytest.fixture
async def world(broker: Broker) -> AsyncIterator[World]:
    s = ops_settings(broker, "reconcile")
    snapshots = demo_snapshot_dicts()
    await prepare(s, snapshots)
    snaps = [RegisterSnapshot.model_validate(raw) for raw in snapshots]
    # Imported at once: staging and journal.
    sandbox, tokens = sandbox_for(snaps, "reconcile", 42_365_431, import_delay_s=0.0)
    book = RegisterBook()
    w = World(broker, s, sandbox, tokens, book)
    for snap in snaps:
        assert book.offer(snap).accepted
        w.targets[snap.tenant_id] = Target(
            snap.tenant_id, snap.settings.url, snap.settings.token_ref, snap.test_tenant
        )
    await sandbox.start()
    try:
        events = [e for e in generate_events(60, seed=19) if e["status"] == "Betalt"]
        await publish(s.bootstrap or "", s.topics.payments, event_records(events))
        submissions, rejections = [], []
        now = datetime.now(UTC)
        for raw in events:
            event = PaymentStatusEvent.model_validate(raw)
            key = (event.tenant_id, event.payment_id)
            if key in w.posted or key in w.rejected:
                continue
            w.events[key] = raw
            result = evaluate(event, book.index(event.tenant_id))
            if isinstance(result, Enriched):
                w.posted[key] = result.submission(event, now)
                submissions.append(w.posted[key])
            else:
                w.rejected.append(key)
                rejections.append(result.rejection(event, now).model_dump_json().encode())
        assert len(w.posted) >= 10 and w.rejected
        receipts = await w.post(submissions)
        await publish(
            s.bootstrap or "",
            s.topics.submissions,
            [(x.tenant_id.encode(), x.model_dump_json().encode()) for x in submissions],
        )
        await publish(s.bootstrap or "", s.topics.receipts, [(None, r) for r in receipts])
        await publish(s.bootstrap or "", s.topics.rejections, [(None, r) for r in rejections])
        yield w
    finally:
        await sandbox.stop()


def lines_of(key: Key) -> list[str]:
    return [f"flyt:{key[0]}:{key[1]}:{n}" for n in (1, 2)]


async def test_clean_then_exactly_the_voucher_doubled_and_the_one_deleted(world: World) -> None:
    code, clean = await world.reconcile()
    assert code == 0, clean
    assert clean["payments"] == len(world.posted) + len(world.rejected)
    assert not clean["differences"] and not clean["not_checked"]
    totals = {
        f: sum(t["findings"].get(f, 0) for t in clean["tenants"].values())
        for f in ("posted_once", "rejected")
    }
    assert totals == {"posted_once": len(world.posted), "rejected": len(world.rejected)}

    doubled, deleted = sorted(world.posted)[1], sorted(world.posted)[-2]
    assert len(world.sandbox.double_voucher(doubled[0], lines_of(doubled))) == 2
    assert world.sandbox.delete_voucher(deleted[0], lines_of(deleted)) == 2
    code, found = await world.reconcile()
    assert code == 5
    assert {(d["tenant_id"], d["payment_id"]): d["finding"] for d in found["differences"]} == {
        doubled: "in_xledger_twice",
        deleted: "receipt_not_in_xledger",
    }
    twice = next(d for d in found["differences"] if d["finding"] == "in_xledger_twice")
    assert [x.split(" ")[0] for x in twice["details"]] == lines_of(doubled)

    code, only = await world.reconcile("--tenant", deleted[0])
    assert code == 5 and set(only["tenants"]) == {deleted[0]}


async def test_each_kind_of_difference_is_named_with_what_differs(world: World) -> None:
    s = world.s
    keys = sorted(world.posted)
    tenant = keys[0][0]
    # Posted, then dead-lettered, and a rejection after a receipt: two outcomes each.
    after, twice = keys[0], keys[2]
    await send(
        world.broker,
        s.topics.dlq,
        after[1].encode(),
        json.dumps(world.events[after]).encode(),
        [("dlq.reason", b"crash")],
    )
    refusal = {"tenant_id": twice[0], "payment_id": twice[1], "reason": "XLEDGER_REFUSED"}
    await send(world.broker, s.topics.rejections, twice[1].encode(), json.dumps(refusal).encode())
    # In Xledger, but its only outcome a dead letter (finding 4), or a rejection.
    dead, refused = (tenant, "P-DEAD-1"), (tenant, "P-REFUSED-1")
    await world.post([await world.betalt(dead), await world.betalt(refused)])
    await send(
        world.broker,
        s.topics.dlq,
        dead[1].encode(),
        json.dumps(world.events[dead]).encode(),
        [("dlq.reason", b"unknown_outcome")],
    )
    body = {"tenant_id": refused[0], "payment_id": refused[1], "reason": "XLEDGER_REFUSED"}
    await send(world.broker, s.topics.rejections, refused[1].encode(), json.dumps(body).encode())
    # The voucher in Xledger with another amount than submitted.
    differs = keys[4]
    world.sandbox.delete_voucher(differs[0], lines_of(differs))
    sub = world.posted[differs]
    changed = [line.model_copy(update={"amount": line.amount * 2}) for line in sub.lines]
    await world.post([sub.model_copy(update={"lines": changed})])
    # In Xledger without any outcome; and a Betalt payment with nothing at all.
    unreceipted, lonely = (tenant, "P-UNRECEIPTED-1"), (tenant, "P-LONELY-1")
    await world.post([await world.betalt(unreceipted)])
    await world.betalt(lonely)

    code, found = await world.reconcile()
    assert code == 5
    by_key = {(d["tenant_id"], d["payment_id"]): d for d in found["differences"]}
    assert {k: d["finding"] for k, d in by_key.items()} == {
        dead: "dead_lettered_but_in_xledger",
        refused: "rejected_but_in_xledger",
        differs: "differs",
        after: "two_outcomes",
        twice: "two_outcomes",
        unreceipted: "in_xledger_without_receipt",
        lonely: "no_outcome",
    }
    amount = sub.lines[0].amount
    assert by_key[differs]["details"] == [
        f"line 1 amount: {amount * 2:.2f} in Xledger, {amount:.2f} submitted",
        f"counter line amount: {-amount * 2:.2f} in Xledger, {-amount:.2f} submitted",
    ]
    assert by_key[after]["details"] == ["posted, then dead_lettered"]
    assert by_key[dead]["details"] == ["dead-lettered (unknown_outcome), yet in Xledger"]


async def test_the_run_serves_its_result_and_only_it_while_it_lingers(world: World) -> None:
    port = free_port()
    env = ops_env(world.broker, world.s, FLYT_SANDBOX="1", **world.tokens)
    env["FLYT_XLEDGER_ENDPOINT"] = world.sandbox.url or ""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "reconcile",
            "--metrics-port",
            str(port),
            "--linger",
            "60",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as http:

            async def served() -> bool:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200
                except httpx.TransportError:
                    return False

            await until_async(served, 60, "the reconcile run's /metrics")
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        stop_process(proc)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert {name for name, _ in samples} == {
        "flyt_reconcile_payments",
        "flyt_reconcile_last_run_timestamp_seconds",
        "flyt_reconcile_last_run_exit_code",
    }
    assert samples[("flyt_reconcile_last_run_exit_code", ())] == 0
    posted = sum(v for (name, labels), v in samples.items() if ("finding", "posted_once") in labels)
    assert posted == len(world.posted)


async def test_every_posted_field_is_compared_not_only_amount_account_and_date(
    world: World,
) -> None:
    """A voucher in Xledger with another text, and one with another dimension value (one
    the entity knows: Xledger would refuse an unknown one)."""
    keys = sorted(world.posted)

    def other_ansvar(key: Key) -> str | None:
        mine = world.posted[key].lines[0].glObject1
        values = {world.posted[k].lines[0].glObject1 for k in keys if k[0] == key[0]}
        return next(iter(sorted(v for v in values - {mine, None} if v)), None)

    dim_key = next(k for k in keys if other_ansvar(k))
    text_key = next(k for k in keys if k != dim_key)
    other = other_ansvar(dim_key)
    for key, change in ((text_key, {"text": "Endret i Xledger"}), (dim_key, {"glObject1": other})):
        world.sandbox.delete_voucher(key[0], lines_of(key))
        sub = world.posted[key]
        changed = [sub.lines[0].model_copy(update=change), sub.lines[1]]
        await world.post([sub.model_copy(update={"lines": changed})])
    code, found = await world.reconcile()
    assert code == 5, found
    by_key = {(d["tenant_id"], d["payment_id"]): d for d in found["differences"]}
    assert set(by_key) == {text_key, dim_key}
    text = world.posted[text_key].lines[0].text
    assert by_key[text_key]["details"] == [
        f"line 1 text: Endret i Xledger in Xledger, {text} submitted"
    ]
    ours = world.posted[dim_key].lines[0].glObject1
    assert by_key[dim_key]["details"] == [f"line 1 glObject1: {other} in Xledger, {ours} submitted"]


async def test_a_payment_is_looked_up_at_the_url_and_token_its_receipt_names(
    world: World,
) -> None:
    """Posted with the tenant's previous token, to another entity: the snapshot in force's
    token does not see it; the receipt's token_ref does."""
    tenant = sorted(world.posted)[0][0]
    snap = RegisterSnapshot.model_validate(
        next(d for d in demo_snapshot_dicts() if d["tenant_id"] == tenant)
    )
    old = replace(entity_from_snapshot(snap, 7_000_001), name=f"{tenant}-before-rotation")
    world.sandbox.add_entity("tok-before-rotation-51aa", old)
    world.tokens[env_name("ref-before-rotation")] = "tok-before-rotation-51aa"
    before = world.targets[tenant]
    world.targets[tenant] = Target(tenant, before.url, "ref-before-rotation", before.test_tenant)
    key = (tenant, "P-ROTATED-1")
    sub = await world.betalt(key)
    [raw] = await world.post([sub])
    world.targets[tenant] = before
    receipt = Receipt.model_validate_json(raw)
    await publish(
        world.s.bootstrap or "",
        world.s.topics.submissions,
        [(tenant.encode(), sub.model_dump_json().encode())],
    )
    # An older receipt without them (the post stage names both since issue 26): looked up
    # with the snapshot in force, which misses it.
    older = receipt.model_copy(update={"xledger_url": None, "token_ref": None})
    await send(world.broker, world.s.topics.receipts, None, older.model_dump_json().encode())
    code, found = await world.reconcile("--tenant", tenant)
    assert code == 5 and [d["finding"] for d in found["differences"]] == ["receipt_not_in_xledger"]
    named = receipt.model_copy(
        update={"xledger_url": before.url, "token_ref": "ref-before-rotation"}
    )
    await send(world.broker, world.s.topics.receipts, None, named.model_dump_json().encode())
    code, found = await world.reconcile("--tenant", tenant)
    assert code == 0, found


async def test_a_month_reads_oslo_days_and_finance_gets_a_csv(world: World, tmp_path: Path) -> None:
    out = tmp_path / "avstemming.csv"
    month = datetime.now(UTC).astimezone(OSLO).strftime("%Y-%m")
    code, report = await world.reconcile("--month", month, "--csv", str(out))
    assert code == 0, report
    assert report["since"].endswith(("+01:00", "+02:00"))
    with out.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    assert len(rows) == len(world.posted) + len(world.rejected)
    assert {r["finding"] for r in rows} == {"posted_once", "rejected"}
    last_year = f"{int(month[:4]) - 1}{month[4:]}"
    code, report = await world.reconcile("--month", last_year)
    assert code == 0 and report["payments"] == 0
    both = await acli(world.broker, world.s, "reconcile", "--month", month, "--since", "1d")
    assert both.returncode == 2 and "not both" in both.stderr


@pytest.mark.parametrize("broker", ["kafka"], indirect=True)
async def test_a_period_the_topics_no_longer_hold_whole_is_incomplete_never_clean(
    world: World,
) -> None:
    """Retention took the first Betalt events (a retention of a minute, and DeleteRecords for
    what the broker deletes by it in its own time): a period from before them is exit 6 and
    names what is missing; a period within the retention is still clean."""
    from kafka import TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType

    from worker.ops import kafka_clients

    code, _ = await world.reconcile("--since", "1d")
    assert code == 0
    admin = kafka_clients.admin(world.broker.bootstrap)
    try:
        admin.delete_records({TopicPartition(world.s.topics.payments, 0): 1})
        # Deleted, but by a retention of 30 days: nothing of yesterday can have gone.
        code, report = await world.reconcile("--since", "1d")
        assert code == 0 and not report["incomplete"], report
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, world.s.topics.payments, {"retention.ms": "60000"}
                )
            ]
        )
    finally:
        admin.close()
    code, report = await world.reconcile("--since", "1d")
    assert code == 6, report
    [missing] = report["incomplete"]
    assert f"{world.s.topics.payments} partition 0: offsets before 1 were deleted" in missing
    assert world.sandbox.url
    done = await acli(
        world.broker,
        world.s,
        "reconcile",
        "--since",
        "1d",
        FLYT_SANDBOX="1",
        FLYT_XLEDGER_ENDPOINT=world.sandbox.url,
        **world.tokens,
    )
    assert done.returncode == 6 and "INCOMPLETE" in done.stdout, done.stdout
    code, report = await world.reconcile("--since", "1s")
    assert code == 0 and not report["incomplete"]
