"""The Xledger sandbox, driven over HTTP as the client will drive it (xledger.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.devenv.helpers import (
    LOOKUP,
    MUTATION,
    OTHER_TOKEN,
    OWNER,
    PING,
    TOKEN,
    Gql,
    line,
    make_entity,
    voucher,
)
from tests.sandboxes import sandbox_for
from worker.contracts import PaymentStatusEvent
from worker.core import Enriched, evaluate
from worker.core.register_book import RegisterBook
from worker.demo.events import generate_events
from worker.demo.harness import serve_sandbox as serve
from worker.demo.snapshots import demo_snapshots
from worker.devenv.sandbox import (
    PROFILES,
    FaultProfile,
    XledgerSandbox,
)
from worker.xledger.secrets import env_name

ROOT = Path(__file__).resolve().parents[2]


def only_error(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200
    body = r.json()
    assert len(body["errors"]) == 1, body
    return body["errors"][0]


# --- posting ------------------------------------------------------------------------


async def test_valid_mutation_is_stored_and_returned_by_client_id(
    sandbox: XledgerSandbox, gql: Gql
) -> None:
    inputs = voucher("P-1")
    r = await gql(sandbox, MUTATION, {"inputs": inputs})
    body = r.json()
    assert "errors" not in body
    edges = body["data"]["addGLImportItems"]["edges"]
    by_client = {e["clientId"]: e["node"] for e in edges}
    assert by_client == {
        "flyt:t-test:P-1:1": {
            "dbId": 1_000_001,
            "extIdentifier": "flyt:t-test:P-1:1",
            "amount": "17210.00",
        },
        "flyt:t-test:P-1:2": {
            "dbId": 1_000_002,
            "extIdentifier": "flyt:t-test:P-1:2",
            "amount": "-17210.00",
        },
    }
    assert [x["dbId"] for x in sandbox.ledger()] == [1_000_001, 1_000_002]
    s = sandbox.stats
    assert (s.requests, s.mutations, s.accepted_batches, s.accepted_lines) == (1, 1, 1, 2)


async def test_ledger_dump_has_one_flat_line_per_accepted_line(
    sandbox: XledgerSandbox, gql: Gql, tmp_path: Path
) -> None:
    await gql(sandbox, MUTATION, {"inputs": voucher("P-1")})
    await gql(sandbox, MUTATION, {"inputs": voucher("P-2", "101.5", tr=18)})
    path = tmp_path / "ledger.jsonl"
    assert sandbox.dump_ledger(path) == 4
    rows = [json.loads(x) for x in path.read_text("utf-8").splitlines()]
    assert rows == sandbox.ledger()
    expense, counter = rows[0], rows[1]
    assert expense["tenant"] == "t-test"
    assert {k: expense[k] for k in ("dbId", "amount", "account", "trRegNumber", "batch")} == {
        "dbId": 1_000_001,
        "amount": "17210.00",
        "account": "10890",
        "trRegNumber": 17,
        "batch": 1,
    }
    assert expense["glObject1"] == "3100" and expense["project"] == "PR-44"
    assert expense["taxRule"] == "0" and expense["currency"] == "NOK"
    assert expense["postedDate"] == "2026-11-20"
    assert expense["text"] == "Fosterhjemsgodtgjørelse november"
    assert counter["amount"] == "-17210.00" and counter["bankAccountRef"] == 884412
    assert rows[2]["amount"] == "101.50" and rows[2]["batch"] == 2


async def test_duplicate_ext_identifier_is_stored_again(sandbox: XledgerSandbox, gql: Gql) -> None:
    for _ in range(2):
        assert "errors" not in (await gql(sandbox, MUTATION, {"inputs": voucher("P-1")})).json()
    exts = [x["extIdentifier"] for x in sandbox.ledger()]
    assert exts.count("flyt:t-test:P-1:1") == 2


# --- reading back -------------------------------------------------------------------


async def test_lookup_with_no_match_has_null_edges(sandbox: XledgerSandbox, gql: Gql) -> None:
    r = await gql(sandbox, LOOKUP, {"ids": ["flyt:t-test:nothing:1"]})
    assert r.json() == {
        "data": {
            "glImportItems": {
                "edges": None,
                "pageInfo": {"hasNextPage": False, "hasPreviousPage": False},
            }
        }
    }


async def test_lookup_by_ext_identifier_in_sees_only_own_entity(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    sandbox = await make_sandbox()
    sandbox.add_entity(OTHER_TOKEN, make_entity("t-other"))
    for i in (1, 2, 3):
        await gql(sandbox, MUTATION, {"inputs": voucher(f"P-{i}", tr=i)})
    await gql(sandbox, MUTATION, {"inputs": voucher("P-1")}, token=OTHER_TOKEN)
    wanted = ["flyt:t-test:P-3:1", "flyt:t-test:P-1:2", "flyt:t-test:P-1:1"]
    page = await gql(sandbox, LOOKUP, {"ids": wanted})
    edges = page.json()["data"]["glImportItems"]["edges"]
    assert [e["node"]["extIdentifier"] for e in edges] == sorted(wanted)  # dbId order here
    assert [e["node"]["dbId"] for e in edges] == [1_000_001, 1_000_002, 1_000_005]
    assert edges[0]["node"]["account"] == {"code": "10890"}
    assert edges[0]["cursor"] == "1000001"

    first = (await gql(sandbox, LOOKUP, {"ids": wanted, "first": 2})).json()["data"]
    assert first["glImportItems"]["pageInfo"]["hasNextPage"] is True
    cursor = first["glImportItems"]["edges"][-1]["cursor"]
    rest = (await gql(sandbox, LOOKUP, {"ids": wanted, "first": 2, "after": cursor})).json()
    conn = rest["data"]["glImportItems"]
    assert [e["node"]["dbId"] for e in conn["edges"]] == [1_000_005]
    assert conn["pageInfo"] == {"hasNextPage": False, "hasPreviousPage": True}


async def test_lookup_first_over_10000_is_refused(sandbox: XledgerSandbox, gql: Gql) -> None:
    error = only_error(await gql(sandbox, LOOKUP, {"ids": None, "first": 10_001}))
    assert error["code"] == "BAD_REQUEST" and "10000" in error["message"]


# --- GraphQL validation -------------------------------------------------------------


async def test_unknown_field_is_a_validation_error(sandbox: XledgerSandbox, gql: Gql) -> None:
    query = MUTATION.replace("extIdentifier amount", "extIdentifier konto")
    body = (await gql(sandbox, query, {"inputs": voucher("P-1")})).json()
    assert "data" not in body
    (error,) = body["errors"]
    assert "konto" in error["message"] and error["locations"][0]["line"] == 3
    assert sandbox.ledger() == [] and sandbox.stats.rejected_validation == 1


async def test_a_query_parsed_and_validated_once_answers_every_request_alike(
    sandbox: XledgerSandbox, gql: Gql
) -> None:
    """The sandbox keeps what it parsed and validated of a query text (server.py
    `_checked`): an invalid query is refused every time it is sent, and a valid one runs
    with each request's own variables."""
    query = MUTATION.replace("extIdentifier amount", "extIdentifier konto")
    for _ in range(2):
        (error,) = (await gql(sandbox, query, {"inputs": voucher("P-1")})).json()["errors"]
        assert "konto" in error["message"]
    assert sandbox.stats.rejected_validation == 2
    for payment in ("P-1", "P-2"):
        await gql(sandbox, MUTATION, {"inputs": voucher(payment)})
    found = await gql(sandbox, LOOKUP, {"ids": ["flyt:t-test:P-2:1", "flyt:t-test:P-1:1"]})
    edges = found.json()["data"]["glImportItems"]["edges"]
    assert [e["node"]["extIdentifier"] for e in edges] == ["flyt:t-test:P-1:1", "flyt:t-test:P-2:1"]


async def test_unknown_input_field_is_refused(sandbox: XledgerSandbox, gql: Gql) -> None:
    inputs = voucher("P-1")
    inputs[0]["node"]["konto"] = "10890"
    error = only_error(await gql(sandbox, MUTATION, {"inputs": inputs}))
    assert "konto" in error["message"] and error["locations"]
    assert sandbox.ledger() == []


@pytest.mark.parametrize("amount", [True, "12.345", "1e3", "NaN", 0.1 + 0.2, None])
async def test_amount_of_the_wrong_type_is_refused(
    sandbox: XledgerSandbox, gql: Gql, amount: Any
) -> None:
    inputs = [line("a", amount), line("b", "0.00")]
    body = (await gql(sandbox, MUTATION, {"inputs": inputs})).json()
    error = body["errors"][0]
    if amount is None:  # a null amount is well-typed, but the field is required
        assert error["message"] == "amount: Field is required."
    else:
        assert "Decimal" in error["message"] and error["locations"]
    assert sandbox.ledger() == []


async def test_amounts_as_numbers_are_accepted(sandbox: XledgerSandbox, gql: Gql) -> None:
    inputs = [line("a", 101.5), line("b", -101.5, account={"code": "1920"})]
    body = (await gql(sandbox, MUTATION, {"inputs": inputs})).json()
    assert "errors" not in body
    assert [x["amount"] for x in sandbox.ledger()] == ["101.50", "-101.50"]


async def test_unknown_codes_are_invalid_values_and_nothing_is_stored(
    sandbox: XledgerSandbox, gql: Gql
) -> None:
    good = voucher("P-1", tr=1)
    bad = voucher("P-2", tr=2)
    bad[0]["node"] |= {
        "account": {"code": "9999"},
        "glObject1": {"code": "X1"},
        "taxRule": {"code": "25"},
        "project": {"code": "PR-00"},
    }
    bad[1]["node"] |= {"bankAccountRef": {"dbId": 77}, "currency": {"code": "XXX"}}
    body = (await gql(sandbox, MUTATION, {"inputs": good + bad})).json()
    assert body["data"] == {"addGLImportItems": None}
    assert sorted(e["message"] for e in body["errors"]) == sorted(
        [
            f"account.code: No value matching owner {OWNER}, code '9999'.",
            f"glObject1.code: No value matching owner {OWNER}, code 'X1'.",
            f"taxRule.code: No value matching owner {OWNER}, code '25'.",
            f"project.code: No value matching owner {OWNER}, code 'PR-00'.",
            f"bankAccountRef.dbId: No value matching owner {OWNER}, dbId 77.",
            f"currency.code: No value matching owner {OWNER}, code 'XXX'.",
        ]
    )
    for error in body["errors"]:
        assert error["extensions"]["code"] == "INVALID_VALUE" == error["code"]
        assert error["path"] == ["addGLImportItems"] and error["locations"]
    assert sandbox.ledger() == [] and sandbox.stats.accepted_batches == 0


async def test_show_alternatives_lists_valid_codes(sandbox: XledgerSandbox, gql: Gql) -> None:
    inputs = voucher("P-1")
    inputs[0]["node"]["glObject1"] = {"code": "X1", "showAlternatives": "YES"}
    error = only_error(await gql(sandbox, MUTATION, {"inputs": inputs}))
    assert error["extensions"]["exampleValidInputs"] == [{"code": "252"}, {"code": "3100"}]


async def test_required_fields(sandbox: XledgerSandbox, gql: Gql) -> None:
    inputs = voucher("P-1")
    del inputs[0]["node"]["postedDate"]
    inputs[1]["node"]["account"] = {}
    body = (await gql(sandbox, MUTATION, {"inputs": inputs})).json()
    assert sorted(e["message"] for e in body["errors"]) == [
        "account: A code or a dbId is required.",
        "postedDate: Field is required.",
    ]
    assert sandbox.ledger() == []


async def test_unbalanced_voucher_is_refused(sandbox: XledgerSandbox, gql: Gql) -> None:
    inputs = [*voucher("P-1"), line("extra", "5.00", account={"code": "13750"})]
    error = only_error(await gql(sandbox, MUTATION, {"inputs": inputs}))
    assert error["message"] == "Voucher 17 does not balance (sum 5.00)."
    assert error["extensions"] == {"code": "INVALID_VALUE"}
    assert sandbox.ledger() == []


async def test_at_most_500_inputs(sandbox: XledgerSandbox, gql: Gql) -> None:
    inputs = [x for i in range(250) for x in voucher(f"P-{i}", tr=i)]
    assert "errors" not in (await gql(sandbox, MUTATION, {"inputs": inputs})).json()
    too_many = [x for i in range(250) for x in voucher(f"Q-{i}", tr=i)] + [line("q", "0")]
    body = (await gql(sandbox, MUTATION, {"inputs": too_many})).json()
    assert body["data"] == {"addGLImportItems": None}
    (error,) = body["errors"]
    assert error["code"] == "BAD_REQUEST" and "500" in error["message"]
    assert len(sandbox.ledger()) == 500
    empty = (await gql(sandbox, MUTATION, {"inputs": []})).json()
    assert empty == {"data": {"addGLImportItems": {"edges": None}}}
    assert sandbox.stats.accepted_batches == 1


async def test_non_graphql_requests_get_400(
    sandbox: XledgerSandbox, client: httpx.AsyncClient
) -> None:
    assert sandbox.url
    auth = {"Authorization": f"token {TOKEN}"}
    get = await client.get(sandbox.url, headers=auth)
    bad_json = await client.post(sandbox.url, content=b"{nope", headers=auth)
    no_query = await client.post(sandbox.url, json={"variables": {}}, headers=auth)
    for r in (get, bad_json, no_query):
        assert r.status_code == 400
        assert r.json()["errors"][0]["message"]


# --- auth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, f"Bearer {TOKEN}", "token", f"token{TOKEN}", TOKEN, f"token {TOKEN} x"],
    ids=["missing", "bearer", "no-value", "no-space", "bare", "trailing"],  # no token in ids
)
async def test_badly_formed_token(sandbox: XledgerSandbox, gql: Gql, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    r = await gql(sandbox, PING, token=None, headers=headers)
    assert r.json() == {
        "errors": [
            {
                "message": 'Bad format for API Token. Expected header: "Authorization: token '
                '<your-token>"',
                "code": "BAD_REQUEST.BAD_TOKEN_FORMAT",
            }
        ],
        "data": None,
    }
    assert sandbox.stats.auth_failures == 1 and sandbox.stats.request_times == {}


async def test_unknown_token(
    sandbox: XledgerSandbox, gql: Gql, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    r = await gql(sandbox, MUTATION, {"inputs": voucher("P-1")}, token="tok-Unknown-Secret-1")
    assert r.json() == {
        "errors": [{"message": "Invalid API token", "code": "UNAUTHORIZED"}],
        "data": None,
    }
    assert sandbox.ledger() == []
    assert "Secret" not in caplog.text
    assert "Secret" not in repr(sandbox.stats)


# --- limits -------------------------------------------------------------------------


async def test_burst_limit(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    now = [1000.0]  # the window's clock stands still until the test moves it
    sandbox = await make_sandbox(burst_window_s=0.8, clock=lambda: now[0])
    for _ in range(20):
        assert "errors" not in (await gql(sandbox, PING)).json()
    error = only_error(await gql(sandbox, PING))
    assert error["code"] == "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"
    reset_at = datetime.fromisoformat(error["extensions"]["resetAt"])
    wait = (reset_at - datetime.now(UTC)).total_seconds()
    assert 0 < wait <= 0.8
    assert sandbox.stats.burst_errors_sent == 1 and sandbox.stats.queries == 20
    now[0] += 0.79
    assert only_error(await gql(sandbox, PING))["code"] == "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"
    now[0] += 0.02  # the window has moved past the first 20
    assert "errors" not in (await gql(sandbox, PING)).json()


async def test_concurrency_limit_with_slow_answers(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    slow = replace(PROFILES["slow"], slow=1.0, slow_seconds=0.3)
    sandbox = await make_sandbox(faults=slow, concurrency_limit=2)
    answers = await asyncio.gather(*(gql(sandbox, PING) for _ in range(5)))
    codes = sorted(r.json().get("errors", [{}])[0].get("code", "ok") for r in answers)
    assert codes == ["BAD_REQUEST.CONCURRENCY_LIMIT_REACHED"] * 3 + ["ok"] * 2
    assert sandbox.stats.max_in_flight == {"t-test": 2}
    assert sandbox.stats.concurrency_errors_sent == 3
    assert sandbox.stats.faults == {"slow": 2}


async def test_credits_run_out(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    sandbox = await make_sandbox(make_entity(credits=2))
    for _ in range(2):
        assert "errors" not in (await gql(sandbox, PING)).json()
    error = only_error(await gql(sandbox, MUTATION, {"inputs": voucher("P-1")}))
    assert error["code"] == "BAD_REQUEST.INSUFFICIENT_CREDITS"
    assert datetime.fromisoformat(error["extensions"]["resetAt"]) > datetime.now(UTC)
    assert sandbox.stats.credit_errors_sent == 1 and sandbox.ledger() == []


# --- faults -------------------------------------------------------------------------


def test_named_profiles() -> None:
    assert set(PROFILES) == {
        "none",
        "5xx",
        "drop",
        "slow",
        "commit-then-fail",
        "burst",
        "mixed",
        "staging-cleared",
        "store-late",
    }
    assert PROFILES["none"] == FaultProfile()
    # Stored past the worker's 15 s request deadline: only the settle time catches it.
    assert PROFILES["store-late"] == FaultProfile(store_after_s=16.0)
    assert PROFILES["mixed"] == FaultProfile(
        error_5xx=0.10, commit_then_fail=0.05, burst_error=0.05
    )
    assert PROFILES["5xx"].error_5xx > 0 and PROFILES["drop"].drop > 0
    assert PROFILES["slow"].slow > 0 and PROFILES["burst"].burst_error > 0
    assert PROFILES["commit-then-fail"].commit_then_fail > 0
    assert PROFILES["staging-cleared"] == FaultProfile(clear_processed=True)


async def test_5xx_profile_answers_plain_text_and_does_nothing(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    sandbox = await make_sandbox(faults=PROFILES["5xx"], seed=3, burst_limit=100)
    statuses = []
    for i in range(30):
        r = await gql(sandbox, MUTATION, {"inputs": voucher(f"P-{i}")})
        statuses.append(r.status_code)
        if r.status_code >= 500:
            assert r.status_code in (502, 503)
            assert r.headers["content-type"].startswith("text/plain")
    failed = sum(s >= 500 for s in statuses)
    assert 0 < failed < 30 and sandbox.stats.faults == {"5xx": failed}
    assert sandbox.stats.accepted_batches == 30 - failed
    assert len(sandbox.stats.request_times["t-test"]) == 30 - failed  # never got past faults


async def test_drop_profile_closes_the_connection(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    sandbox = await make_sandbox(faults=replace(PROFILES["drop"], drop=1.0))
    with pytest.raises(httpx.TransportError):
        await gql(sandbox, MUTATION, {"inputs": voucher("P-1")})
    assert sandbox.ledger() == [] and sandbox.stats.faults == {"drop": 1}


async def test_slow_profile_delays_the_correct_answer(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    slow = replace(PROFILES["slow"], slow=1.0, slow_seconds=0.2)
    sandbox = await make_sandbox(faults=slow)
    body = (await gql(sandbox, MUTATION, {"inputs": voucher("P-1")})).json()
    assert sandbox.stats.faults == {"slow": 1}  # delayed, then answered correctly
    assert len(body["data"]["addGLImportItems"]["edges"]) == 2


async def test_burst_profile_sends_spurious_burst_errors(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    sandbox = await make_sandbox(faults=replace(PROFILES["burst"], burst_error=1.0))
    error = only_error(await gql(sandbox, MUTATION, {"inputs": voucher("P-1")}, token=None))
    assert error["code"] == "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"
    assert error["extensions"]["resetAt"]
    s = sandbox.stats
    assert (s.spurious_burst_errors_sent, s.burst_errors_sent, s.auth_failures) == (1, 0, 0)
    assert sandbox.ledger() == []


async def test_commit_then_fail_stores_yet_the_client_sees_a_failure(
    make_sandbox: Callable[..., Awaitable[XledgerSandbox]], gql: Gql
) -> None:
    faults = replace(PROFILES["commit-then-fail"], commit_then_fail=1.0, hang_seconds=0.1)
    sandbox = await make_sandbox(faults=faults, seed=11)
    # A refused mutation and a query are answered normally.
    assert only_error(await gql(sandbox, MUTATION, {"inputs": voucher("P-0")[:1]}))
    assert "errors" not in (await gql(sandbox, LOOKUP, {"ids": ["x"]})).json()
    kinds: set[str] = set()
    posted = 0
    while len(sandbox.stats.faults) < 3 and posted < 30:  # until 500, drop and hang+drop
        posted += 1
        try:
            r = await gql(sandbox, MUTATION, {"inputs": voucher(f"P-{posted}")})
            assert r.status_code == 500 and r.text.startswith("500")
            kinds.add("500")
        except httpx.TransportError:
            kinds.add("drop")
    assert kinds == {"500", "drop"}
    assert len(sandbox.ledger()) == 2 * posted  # every batch was stored
    assert sandbox.stats.faults.get("commit-then-fail:hang", 0) > 0
    assert sum(sandbox.stats.faults.values()) == posted
    ids = [f"flyt:t-test:P-{posted}:1"]
    found = (await gql(sandbox, LOOKUP, {"ids": ids})).json()["data"]["glImportItems"]
    assert found["edges"][0]["node"]["extIdentifier"] == ids[0]


# --- demo tenants -------------------------------------------------------------------


def as_input(tr: int, voucher_line: Any) -> dict[str, Any]:
    """A core VoucherLine as an addGLImportItems input, as the client will send it."""
    node: dict[str, Any] = {"trRegNumber": tr}
    for key, value in voucher_line.to_json().items():
        if key == "bankAccountRef":
            node[key] = {"dbId": int(value)}
        elif key in ("extIdentifier", "amount", "postedDate", "text"):
            node[key] = value
        else:
            node[key] = {"code": value}
    return {"clientId": node["extIdentifier"], "node": node}


async def test_demo_postings_are_accepted(client: httpx.AsyncClient, gql: Gql) -> None:
    snapshots = demo_snapshots()
    sandbox, tokens = sandbox_for(snapshots, "demo", OWNER)
    book = RegisterBook()
    for snap in snapshots:
        assert book.offer(snap).accepted
    entities = {entity.name: entity for entity in sandbox.entities()}
    token_of = {snap.tenant_id: tokens[env_name(snap.settings.token_ref)] for snap in snapshots}
    vestfold = entities["t-vestfold-bv"]
    assert {"1920", "10890"} <= vestfold.accounts and vestfold.bank_accounts == {884412}
    assert {"3100", "252", "PR-44", "P-REFUSJON-7"} <= vestfold.gl_objects & vestfold.projects
    assert vestfold.tax_rules == {"0", "1", "11", "13"}

    inputs: dict[str, list[dict[str, Any]]] = {t: [] for t in entities}
    unknown_vat: set[str] = set()
    for tr, raw in enumerate(generate_events(400, seed=5), start=1):
        event = PaymentStatusEvent.model_validate(raw)
        result = evaluate(event, book.index(event.tenant_id))
        if not isinstance(result, Enriched):
            continue
        if result.vat_code not in entities[event.tenant_id].tax_rules:
            # The event's own VAT code, where the tenant lists none: Xledger would refuse it.
            unknown_vat.add(result.vat_code)
            continue
        inputs[event.tenant_id] += [as_input(tr, x) for x in result.lines]
    assert unknown_vat <= {"25"}
    await sandbox.start()
    try:
        for tenant, items in inputs.items():
            assert len(items) >= 20
            r = await gql(sandbox, MUTATION, {"inputs": items}, token=token_of[tenant])
            body = r.json()
            assert "errors" not in body, body["errors"][:3]
            assert len(body["data"]["addGLImportItems"]["edges"]) == len(items), tenant
    finally:
        await sandbox.stop()
    assert {x["tenant"] for x in sandbox.ledger()} == set(entities)


# --- the CLI entry point ------------------------------------------------------------


def test_serve_refuses_an_unknown_profile() -> None:
    with pytest.raises(ValueError, match="valid: none, 5xx, drop, slow"):
        serve(0, "chaos", None)


def test_serve_writes_missing_tokens_and_never_prints_them(tmp_path: Path) -> None:
    token_dir = tmp_path / "tokens"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLEDGER_TOKEN")}
    code = (
        "from pathlib import Path; from worker.demo.harness import serve_sandbox as serve; "
        f"serve(0, 'mixed', Path({str(token_dir)!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        with ThreadPoolExecutor(1) as pool:  # a bounded wait, should the sandbox not start
            first = pool.submit(proc.stdout.readline).result(timeout=20)
        assert "http://127.0.0.1:" in first and "mixed" in first
        url = first.split()[3]
        tokens = {p.name: p.read_text("utf-8").strip() for p in token_dir.iterdir()}
        assert set(tokens) == {"t-vestfold-bv", "t-lillevik", "t-fjordby-test"}
        for path in token_dir.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        headers = {"Authorization": f"token {tokens['t-lillevik']}"}
        statuses = []
        for _ in range(5):  # "mixed" fails some requests; one of five gets through
            r = httpx.post(url, json={"query": PING}, headers=headers, timeout=5)
            statuses.append(r.status_code == 200 and "data" in r.json() and r.json()["data"])
        assert any(statuses)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    for token in tokens.values():
        assert token not in first + out + err
