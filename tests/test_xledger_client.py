"""The Xledger client against the sandbox: idempotent, rate-aware, errors classified."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from graphql import build_schema, parse, validate

from tests.xledger_helpers import client_for, entity, submission, target, token_for
from worker import logs
from worker.core.endpoints import UrlPolicy
from worker.xledger import client as client_module
from worker.xledger.client import XledgerClient
from worker.xledger.errors import (
    AuthFailed,
    CreditsExhausted,
    RateLimited,
    Refused,
    UnknownOutcome,
    classify_errors,
)
from worker.xledger.sandbox import PROFILES, FaultProfile, XledgerSandbox
from worker.xledger.secrets import SecretStore

TENANT = "t-one"


async def started(
    faults: FaultProfile = PROFILES["none"], tenants: tuple[str, ...] = (TENANT,), **kw: float
) -> XledgerSandbox:
    sandbox = XledgerSandbox(faults=faults, seed=11, **kw)  # type: ignore[arg-type]
    for i, t in enumerate(tenants):
        sandbox.add_entity(token_for(t), entity(t, owner=42365431 + i))
    await sandbox.start()
    return sandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[XledgerSandbox]:
    sb = await started()
    yield sb
    await sb.stop()


def ledger_counts(sandbox: XledgerSandbox) -> Counter[str]:
    return Counter(line["extIdentifier"] for line in sandbox.ledger())


def assert_exactly_once(sandbox: XledgerSandbox, subs: list) -> None:
    counts = ledger_counts(sandbox)
    expected = {line.extIdentifier for s in subs for line in s.lines}
    assert set(counts) == expected
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:5]


# --- the happy path ---------------------------------------------------------------------


async def test_batch_is_one_lookup_and_one_mutation_with_receipts_per_payment(sandbox) -> None:
    subs = [submission(TENANT, i) for i in range(40)]
    async with client_for(sandbox.url, [TENANT]) as c:
        result = await c.post(target(TENANT), subs)
    assert result.requests == 2
    assert [r.payment_id for r in result.receipts] == [s.payment_id for s in subs]
    assert not result.refused and not result.failed
    assert_exactly_once(sandbox, subs)
    receipt = result.receipts[0]
    assert [line.extIdentifier for line in receipt.lines] == [
        "flyt:t-one:P-000000:1",
        "flyt:t-one:P-000000:2",
    ]
    by_ext = {line["extIdentifier"]: line for line in sandbox.ledger()}
    assert receipt.lines[0].dbId == by_ext["flyt:t-one:P-000000:1"]["dbId"]


async def test_r18_each_payment_is_its_own_balanced_voucher(sandbox) -> None:
    subs = [submission(TENANT, i, amount=f"{100 + i}.25") for i in range(5)]
    async with client_for(sandbox.url, [TENANT]) as c:
        await c.post(target(TENANT), subs)
    vouchers: dict[int, list] = {}
    for line in sandbox.ledger():
        vouchers.setdefault(line["trRegNumber"], []).append(line)
    assert len(vouchers) == 5
    for lines in vouchers.values():
        assert len(lines) == 2 and sum(float(x["amount"]) for x in lines) == 0
        assert len({x["extIdentifier"].rsplit(":", 1)[0] for x in lines}) == 1


async def test_posting_again_finds_the_payments_and_posts_nothing(sandbox) -> None:
    subs = [submission(TENANT, i) for i in range(10)]
    async with client_for(sandbox.url, [TENANT]) as c:
        await c.post(target(TENANT), subs)
        again = await c.post(target(TENANT), subs)
    assert again.requests == 1  # the lookup only
    assert all(r.already_present for r in again.receipts) and len(again.receipts) == 10
    assert_exactly_once(sandbox, subs)


async def test_same_payment_twice_in_one_call_is_posted_once(sandbox) -> None:
    subs = [submission(TENANT, 1), submission(TENANT, 2), submission(TENANT, 1)]
    async with client_for(sandbox.url, [TENANT]) as c:
        result = await c.post(target(TENANT), subs)
    assert len(result.receipts) == 3
    assert_exactly_once(sandbox, subs[:2])


# --- permanent refusals -----------------------------------------------------------------


async def test_refused_payment_does_not_sink_the_rest_of_its_batch(sandbox) -> None:
    subs = [submission(TENANT, i) for i in range(64)]
    subs[7] = submission(TENANT, 7, account="9999")
    subs[40] = submission(TENANT, 40, account="8888")
    async with client_for(sandbox.url, [TENANT]) as c:
        result = await c.post(target(TENANT), subs)
    assert sorted(s.payment_id for s, _ in result.refused) == ["P-000007", "P-000040"]
    message = dict((s.payment_id, m) for s, m in result.refused)["P-000007"]
    assert "account.code: No value matching owner 42365431, code '9999'" in message
    assert len(result.receipts) == 62 and not result.failed
    assert_exactly_once(sandbox, [s for s in subs if s.payment_id not in {"P-000007", "P-000040"}])
    assert result.requests <= 2 + 2 * 2 * 6  # bisection: about 2·log2(64) per refused payment


async def test_refusal_naming_no_code_is_found_by_bisection(sandbox) -> None:
    subs = [submission(TENANT, i) for i in range(32)]
    broken = submission(TENANT, 21)
    lines = [broken.lines[0], broken.lines[1].model_copy(update={"amount": Decimal("-1.00")})]
    subs[21] = broken.model_copy(update={"lines": lines})  # a voucher that does not balance
    async with client_for(sandbox.url, [TENANT]) as c:
        result = await c.post(target(TENANT), subs)
    assert [s.payment_id for s, _ in result.refused] == ["P-000021"]
    assert "does not balance" in result.refused[0][1]
    assert len(result.receipts) == 31
    assert result.requests <= 1 + 2 * 5 + 1  # lookup, then about 2·log2(32) mutations


async def test_bad_token_fails_the_batch_without_bisecting(sandbox) -> None:
    c = XledgerClient(
        SecretStore({"XLEDGER_TOKEN_T_ONE": "wrong-token-123456"}),
        policy=UrlPolicy(allow_sandbox=True),
        endpoint_override=sandbox.url,
    )
    async with c:
        result = await c.post(target(TENANT), [submission(TENANT, i) for i in range(20)])
    assert result.requests == 1
    assert {code for _, code, _ in result.failed} == {"auth"} and len(result.failed) == 20
    assert not sandbox.ledger()


async def test_missing_token_fails_without_any_request(sandbox) -> None:
    async with client_for(sandbox.url, []) as c:
        result = await c.post(target(TENANT), [submission(TENANT, 1)])
    assert result.requests == 0
    assert result.failed[0][1] == "missing_token"
    assert "XLEDGER_TOKEN_T_ONE" in result.failed[0][2]


async def test_r2_url_outside_the_allowed_list_is_never_sent_a_token(sandbox) -> None:
    async with client_for(sandbox.url, [TENANT]) as c:
        bad = target(TENANT).__class__(TENANT, "https://evil.example/graphql", TENANT)
        result = await c.post(bad, [submission(TENANT, 1)])
    assert result.requests == 0 and result.failed[0][1] == "url_not_allowed"
    with pytest.raises(ValueError):
        XledgerClient(SecretStore({}), endpoint_override=sandbox.url)  # not in sandbox mode


async def test_submissions_of_another_tenant_are_refused_outright(sandbox) -> None:
    async with client_for(sandbox.url, [TENANT]) as c:
        with pytest.raises(ValueError):
            await c.post(target(TENANT), [submission("t-other", 1)])


# --- failures of unknown outcome ---------------------------------------------------------


@pytest.mark.parametrize("profile", ["5xx", "drop", "slow", "commit-then-fail", "burst"])
async def test_every_fault_profile_ends_with_each_payment_once(profile: str) -> None:
    faults = PROFILES[profile]
    if profile == "slow":
        faults = FaultProfile(slow=0.5, slow_seconds=0.3)
    elif profile == "commit-then-fail":
        faults = FaultProfile(commit_then_fail=0.5, hang_seconds=1.5)
    sb = await started(faults)
    try:
        subs = [submission(TENANT, i) for i in range(300)]  # two chunks
        async with client_for(sb.url, [TENANT], max_attempts=30) as c:
            result = await c.post(target(TENANT), subs)
        assert not result.failed and not result.refused
        assert len(result.receipts) == 300
        assert_exactly_once(sb, subs)
    finally:
        await sb.stop()


async def test_commit_then_fail_is_found_by_lookup_not_posted_again() -> None:
    sb = await started(FaultProfile(commit_then_fail=1.0, hang_seconds=1.5))
    try:
        subs = [submission(TENANT, i) for i in range(10)]
        async with client_for(sb.url, [TENANT]) as c:
            result = await c.post(target(TENANT), subs)
        assert all(r.already_present for r in result.receipts) and len(result.receipts) == 10
        assert sb.stats.accepted_batches == 1
        assert_exactly_once(sb, subs)
    finally:
        await sb.stop()


async def test_retries_are_capped_and_the_rest_is_handed_back_as_failed() -> None:
    sb = await started(FaultProfile(error_5xx=1.0))
    try:
        async with client_for(sb.url, [TENANT], max_attempts=3) as c:
            result = await c.post(target(TENANT), [submission(TENANT, i) for i in range(5)])
        assert len(result.failed) == 5 and result.requests == 3
        assert {code for _, code, _ in result.failed} == {"unknown_outcome"}
    finally:
        await sb.stop()


# --- limits --------------------------------------------------------------------------------


async def test_acceptance_5000_of_one_tenant_at_once_few_requests_no_burst_error() -> None:
    sb = await started()
    try:
        subs = [submission(TENANT, i) for i in range(5000)]
        async with client_for(sb.url, [TENANT]) as c:
            t0 = time.monotonic()
            result = await c.post(target(TENANT), subs)
            elapsed = time.monotonic() - t0
        assert len(result.receipts) == 5000
        assert result.requests <= 50, result.requests  # at most 1 request per 100 payments
        assert sb.stats.burst_errors_sent == 0 and sb.stats.spurious_burst_errors_sent == 0
        assert_exactly_once(sb, subs)
        times = sb.stats.request_times[TENANT]
        assert all(b - a >= 5.0 for a, b in zip(times, times[20:], strict=False))
        print(f"\n5000 payments, one tenant: {result.requests} requests in {elapsed:.1f} s")
    finally:
        await sb.stop()


async def test_acceptance_mixed_faults_5000_for_20_tenants_each_payment_exactly_once(
    tmp_path: Path,
) -> None:
    tenants = tuple(f"t-{i:02d}" for i in range(20))
    sb = await started(PROFILES["mixed"], tenants=tenants)
    sb_faults = PROFILES["mixed"]
    assert (sb_faults.error_5xx, sb_faults.commit_then_fail) == (0.10, 0.05)
    try:
        subs = {t: [submission(t, i) for i in range(250)] for t in tenants}
        async with client_for(sb.url, list(tenants), max_attempts=30) as c:
            # Each tenant's payments in calls of 25, as the stream's small batches come:
            # many requests, so that every kind of fault happens many times.
            async def tenant_calls(t: str) -> list:
                return [await c.post(target(t), subs[t][i : i + 25]) for i in range(0, 250, 25)]

            results = [r for rs in await asyncio.gather(*map(tenant_calls, tenants)) for r in rs]
        assert sum(len(r.receipts) for r in results) == 5000
        assert not any(r.failed or r.refused for r in results)
        dump = tmp_path / "ledger.jsonl"
        sb.dump_ledger(dump)
        counts = Counter(
            json.loads(line)["extIdentifier"] for line in dump.read_text().splitlines()
        )
        assert len(counts) == 10_000 and set(counts.values()) == {1}
        assert (
            sb.stats.faults["5xx"] >= 10
            and sum(  # the faults did happen, often
                n for kind, n in sb.stats.faults.items() if kind.startswith("commit-then-fail")
            )
            >= 5
        )
        requests = sum(r.requests for r in results)
        print(
            f"\nmixed faults, 20 tenants: 5000 payments once each; {requests} requests; "
            f"faults {dict(sb.stats.faults)}; burst errors {sb.stats.spurious_burst_errors_sent}"
        )
    finally:
        await sb.stop()


async def test_ready_in_says_how_long_until_the_budget_has_room_for_a_batch(sandbox) -> None:
    async with client_for(sandbox.url, [TENANT]) as c:
        assert c.ready_in(TENANT) == 0.0
        for i in range(8):  # 16 requests: 16 + 2 still fit under 18 per 5 s
            await c.post(target(TENANT), [submission(TENANT, i)])
        assert c.ready_in(TENANT) == 0.0
        await c.post(target(TENANT), [submission(TENANT, 8)])  # 18 in the window
        wait = c.ready_in(TENANT)
        assert 0.0 < wait <= 5.0
        assert c.ready_in("t-unknown-ref") == 0.0  # no token: nothing to wait for


async def test_burst_limit_error_is_waited_out() -> None:
    sb = await started(burst_limit=3, burst_window_s=0.5)
    try:
        # A client that does not know the limit is this low meets it, waits, and goes on.
        async with client_for(sb.url, [TENANT], burst_limit=100, burst_headroom=0) as c:
            results = await asyncio.gather(
                *(c.post(target(TENANT), [submission(TENANT, i)]) for i in range(8))
            )
        assert sum(len(r.receipts) for r in results) == 8
        assert sb.stats.burst_errors_sent > 0
    finally:
        await sb.stop()


async def test_insufficient_credits_pause_that_tenant_only() -> None:
    from worker import metrics

    sb = XledgerSandbox(seed=1)
    poor = entity("t-poor", credits=1)
    sb.add_entity(token_for("t-poor"), poor)
    sb.add_entity(token_for("t-rich"), entity("t-rich"))
    await sb.start()
    try:
        async with client_for(sb.url, ["t-poor", "t-rich"], credits_pause_s=1.0) as c:
            paused = asyncio.create_task(c.post(target("t-poor"), [submission("t-poor", 1)]))
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            rich = await c.post(target("t-rich"), [submission("t-rich", 1)])
            assert time.monotonic() - t0 < 0.5 and len(rich.receipts) == 1  # not held up
            assert not paused.done()
            assert metrics.XLEDGER_TENANT_PAUSED.labels("t-poor")._value.get() == 1
            poor.credits = 10  # credits bought: the first try after the pause goes through
            result = await asyncio.wait_for(paused, 5)
        assert len(result.receipts) == 1
        assert metrics.XLEDGER_TENANT_PAUSED.labels("t-poor")._value.get() == 0
    finally:
        await sb.stop()


# --- secrets ---------------------------------------------------------------------------


async def test_token_never_appears_in_logs_errors_or_results(caplog) -> None:
    stream = io.StringIO()
    logs.configure("DEBUG", stream=stream)
    caplog.set_level(logging.DEBUG)
    sb = await started(PROFILES["mixed"])
    try:
        subs = [submission(TENANT, i) for i in range(30)]
        subs[3] = submission(TENANT, 3, account="9999")
        async with client_for(sb.url, [TENANT], max_attempts=30) as c:
            result = await c.post(target(TENANT), subs)
        bad = XledgerClient(
            SecretStore({"XLEDGER_TOKEN_T_ONE": "wrong-token-7f7f7f7f"}),
            policy=UrlPolicy(allow_sandbox=True),
            endpoint_override=sb.url,
        )
        async with bad:
            bad_result = await bad.post(target(TENANT), subs[:2])
    finally:
        await sb.stop()
        logs.configure("INFO")
    texts = [
        stream.getvalue(),
        caplog.text,
        repr(result),
        repr(bad_result),
        json.dumps([line for line in sb.ledger()]),
    ]
    texts += [m for _, m in result.refused] + [m for _, _, m in bad_result.failed]
    assert stream.getvalue()  # something was logged
    for secret in (token_for(TENANT), "wrong-token-7f7f7f7f"):
        for text in texts:
            assert secret not in text


# --- contract ----------------------------------------------------------------------------


def test_documents_the_client_sends_validate_against_the_sdl() -> None:
    sdl = (Path(client_module.__file__).parent / "schema.graphql").read_text()
    schema = build_schema(sdl)
    for doc in (client_module.ADD_GL_IMPORT_ITEMS, client_module.GL_IMPORT_ITEMS_BY_EXT_ID):
        assert validate(schema, parse(doc)) == []


@pytest.mark.parametrize(
    ("errors", "kind"),
    [
        (
            [{"message": "Too many requests", "code": "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"}],
            RateLimited,
        ),
        ([{"message": "x", "code": "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED"}], RateLimited),
        ([{"message": "x", "code": "BAD_REQUEST.INSUFFICIENT_CREDITS"}], CreditsExhausted),
        ([{"message": "Bad format for API Token. Expected header: ..."}], AuthFailed),
        ([{"message": "Your query timed out."}], UnknownOutcome),
        ([{"message": "account.code: No value matching owner 1, code 'X'."}], Refused),
    ],
)
def test_error_classification(errors: list, kind: type) -> None:
    assert isinstance(classify_errors(errors), kind)


def test_rate_limit_waits_follow_xledger_sample_or_reset_time() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 11, 24, tzinfo=UTC)
    burst = classify_errors([{"code": "BAD_REQUEST.BURST_RATE_LIMIT_REACHED", "message": ""}], now)
    conc = classify_errors([{"code": "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED", "message": ""}], now)
    reset = classify_errors(
        [
            {
                "code": "BAD_REQUEST.BURST_RATE_LIMIT_REACHED",
                "message": "",
                "extensions": {"resetAt": (now + timedelta(seconds=2)).isoformat()},
            }
        ],
        now,
    )
    assert (burst.wait_s, conc.wait_s, reset.wait_s) == (5.0, 1.0, 2.0)  # type: ignore[attr-defined]
