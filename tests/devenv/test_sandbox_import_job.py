"""The sandbox models Xledger's import job (issue 19): import items become journal entries,
and a fault profile removes them from staging once processed; the public means to double
and delete a voucher (in process and over HTTP), to serve a ledger dump again, and the
hook called when a batch is stored, before its answer leaves."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clock import FakeTime
from tests.devenv.helpers import MUTATION, OTHER_TOKEN, TOKEN, Gql, make_entity, voucher
from tests.sandboxes import sandbox_serving
from worker.devenv.sandbox import PROFILES, XledgerSandbox
from worker.devenv.sandbox.server import StoredBatch

BOTH = """
query ($ids: [String!], $first: Int, $after: String) {
  glImportItems(first: $first, filter: {extIdentifier_in: $ids}) {
    edges { node { dbId extIdentifier createdAt } }
  }
  journalEntries(first: $first, after: $after, filter: {extIdentifier_in: $ids}) {
    edges { cursor node { dbId extIdentifier amount account { code } postedDate
      transactionHeader { importedAt transactionNumber } } }
    pageInfo { hasNextPage }
  }
}
"""
P1 = ["flyt:t-test:P-1:1", "flyt:t-test:P-1:2"]


async def both(gql: Gql, sandbox: XledgerSandbox, ids: list[str], **kw: Any) -> dict[str, Any]:
    body = (await gql(sandbox, BOTH, {"ids": ids, "first": 100} | kw)).json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def ext_ids(connection: dict[str, Any]) -> list[str]:
    return [e["node"]["extIdentifier"] for e in connection["edges"] or []]


async def test_the_import_job_makes_journal_entries_and_staging_keeps_the_items(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    fake = FakeTime()
    sandbox = await make_sandbox(clock=fake.clock, import_delay_s=60.0)
    await gql(sandbox, MUTATION, {"inputs": voucher("P-1")})
    await gql(sandbox, MUTATION, {"inputs": voucher("P-2", tr=18)})
    before = await both(gql, sandbox, P1)
    assert ext_ids(before["glImportItems"]) == P1 and before["journalEntries"]["edges"] is None
    fake.advance(61)  # the import job takes items stored a minute ago, at the next request
    data = await both(gql, sandbox, P1)
    assert ext_ids(data["glImportItems"]) == P1  # by default processed items stay in staging
    entries = [e["node"] for e in data["journalEntries"]["edges"]]
    assert [n["extIdentifier"] for n in entries] == P1
    assert [n["amount"] for n in entries] == ["17210.00", "-17210.00"]
    assert [n["account"]["code"] for n in entries] == ["10890", "1920"]
    assert entries[0]["postedDate"] == "2026-11-20"
    # One voucher, one transaction number; the journal's own dbIds; imported after created.
    headers = [n["transactionHeader"] for n in entries]
    assert headers[0] == headers[1] and headers[0]["transactionNumber"] == 1
    assert {n["dbId"] for n in entries}.isdisjoint(
        {e["node"]["dbId"] for e in data["glImportItems"]["edges"]}
    )
    created = data["glImportItems"]["edges"][0]["node"]["createdAt"]
    assert headers[0]["importedAt"] >= created
    p2 = await both(gql, sandbox, ["flyt:t-test:P-2:1"])
    assert p2["journalEntries"]["edges"][0]["node"]["transactionHeader"]["transactionNumber"] == 2
    assert sandbox.stats.imported_lines == 4
    assert [x["journalEntry"]["transactionNumber"] for x in sandbox.ledger()] == [1, 1, 2, 2]


async def test_the_import_job_takes_the_items_old_enough_and_leaves_the_younger_for_later(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    fake = FakeTime()
    sandbox = await make_sandbox(clock=fake.clock, import_delay_s=60.0)
    await gql(sandbox, MUTATION, {"inputs": voucher("P-1")})
    fake.advance(30)
    await gql(sandbox, MUTATION, {"inputs": voucher("P-2", tr=18)})
    fake.advance(31)  # P-1 is 61 s old, P-2 31 s
    await both(gql, sandbox, P1)
    assert [x["journalEntry"] is not None for x in sandbox.ledger()] == [True, True, False, False]
    fake.advance(30)
    await both(gql, sandbox, P1)
    assert [x["journalEntry"]["transactionNumber"] for x in sandbox.ledger()] == [1, 1, 2, 2]
    assert sandbox.stats.imported_lines == 4


async def test_under_staging_cleared_processed_items_leave_staging_but_not_the_ledger(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    sandbox = await make_sandbox(faults=PROFILES["staging-cleared"], import_delay_s=None)
    await gql(sandbox, MUTATION, {"inputs": voucher("P-1")})
    assert sandbox.run_import_job() == 2
    data = await both(gql, sandbox, P1)
    assert data["glImportItems"]["edges"] is None
    assert ext_ids(data["journalEntries"]) == P1
    assert [x["inStaging"] for x in sandbox.ledger()] == [False, False]  # still posted
    assert sandbox.run_import_job() == 0  # each item is imported once


async def test_journal_entries_page_by_their_own_cursor(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    sandbox = await make_sandbox(import_delay_s=0.0)
    for i in range(3):
        await gql(sandbox, MUTATION, {"inputs": voucher(f"P-{i}", tr=20 + i)})
    ids = [f"flyt:t-test:P-{i}:{n}" for i in range(3) for n in (1, 2)]
    seen: list[str] = []
    after = None
    while True:
        body = (await gql(sandbox, BOTH, {"ids": ids, "first": 4, "after": after})).json()
        conn = body["data"]["journalEntries"]
        seen += ext_ids(conn)
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["edges"][-1]["cursor"]
    assert seen == ids


async def test_a_voucher_doubled_and_one_deleted_in_process(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    sandbox = await make_sandbox(import_delay_s=None)
    await gql(sandbox, MUTATION, {"inputs": voucher("P-1")})
    await gql(sandbox, MUTATION, {"inputs": voucher("P-2", tr=18)})
    again = sandbox.double_voucher("t-test", P1)
    assert [x["extIdentifier"] for x in again] == P1 and again[0]["batch"] == 3
    assert [x["amount"] for x in again] == ["17210.00", "-17210.00"]
    assert ext_ids((await both(gql, sandbox, P1))["glImportItems"]) == P1 + P1
    assert sandbox.delete_voucher("t-test", ["flyt:t-test:P-2:1", "flyt:t-test:P-2:2"]) == 2
    assert sandbox.double_voucher("t-test", ["flyt:t-test:P-2:1"]) == []  # nothing to double
    assert sandbox.delete_voucher("t-other", P1) == 0  # another entity's: untouched
    assert sandbox.ledger_size() == 4


async def test_vouchers_doubled_and_deleted_over_http_with_the_entity_s_token(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    sandbox = await make_sandbox(import_delay_s=None)
    await gql(sandbox, MUTATION, {"inputs": voucher("P-1")})
    assert sandbox.url
    base = sandbox.url.rsplit("/", 1)[0]
    auth = {"Authorization": f"token {TOKEN}"}
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{base}/sandbox/vouchers/double", json={"extIdentifiers": P1}, headers=auth
        )
        assert r.status_code == 200 and len(r.json()["lines"]) == 2
        assert TOKEN not in r.text
        stranger = {"Authorization": f"token {OTHER_TOKEN}"}
        r = await http.post(
            f"{base}/sandbox/vouchers/delete", json={"extIdentifiers": P1}, headers=stranger
        )
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        r = await http.post(f"{base}/sandbox/vouchers/delete", json={"x": 1}, headers=auth)
        assert r.status_code == 400
        r = await http.post(
            f"{base}/sandbox/vouchers/delete", json={"extIdentifiers": P1[:1]}, headers=auth
        )
        assert r.json() == {"deleted": 2}
    assert [x["extIdentifier"] for x in sandbox.ledger()] == [P1[1], P1[1]]


async def test_on_stored_is_told_of_each_stored_batch_even_when_its_answer_is_lost(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]],
) -> None:
    faults = PROFILES["commit-then-fail"].__class__(commit_then_fail=1.0, hang_seconds=0.05)
    sandbox = await make_sandbox(faults=faults, seed=5)
    told: list[StoredBatch] = []
    sandbox.on_stored = told.append
    assert sandbox.url
    async with httpx.AsyncClient() as http:
        for payment in ("P-1", "P-2"):
            request = http.post(
                sandbox.url,
                json={"query": MUTATION, "variables": {"inputs": voucher(payment)}},
                headers={"Authorization": f"token {TOKEN}"},
            )
            with contextlib.suppress(httpx.TransportError):
                await request  # its answer may be dropped: the batch is stored all the same
        await http.post(sandbox.url, json={"query": "{ x }"})  # no batch: nothing told
    ports = [b.peer_port for b in told if b.peer_port is not None]
    assert [(b.tenant, b.batch, b.lines) for b in told] == [("t-test", 1, 2), ("t-test", 2, 2)]
    assert len(ports) == 2 and all(p > 0 for p in ports)


async def test_a_ledger_dump_is_served_again_with_its_db_ids(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql, tmp_path: Path
) -> None:
    first = await make_sandbox(import_delay_s=0.0)
    await gql(first, MUTATION, {"inputs": voucher("P-1")})
    await gql(first, MUTATION, {"inputs": voucher("P-2", "101.50", tr=18)})
    dump = tmp_path / "ledger.jsonl"
    first.dump_ledger(dump)
    second = sandbox_serving({OTHER_TOKEN: make_entity()}, import_delay_s=None)
    assert second.load_ledger(dump) == 4
    keep = ("dbId", "batch", "extIdentifier", "amount", "account", "postedDate", "bankAccountRef")
    assert [{k: x.get(k) for k in keep} for x in second.ledger()] == [
        {k: x.get(k) for k in keep} for x in first.ledger()
    ]
    await second.start()
    try:
        again = await gql(second, MUTATION, {"inputs": voucher("P-3", tr=19)}, token=OTHER_TOKEN)
        assert again.json()["data"]["addGLImportItems"]["edges"][0]["node"]["dbId"] == 1_000_005
    finally:
        await second.stop()
    stranger = sandbox_serving({OTHER_TOKEN: make_entity("t-else")})
    with pytest.raises(ValueError, match="t-test"):
        stranger.load_ledger(dump)
