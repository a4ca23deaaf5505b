"""The Xledger client against the sandbox (idempotent, rate-aware, errors classified), and
its pacing and wire format on their own."""

from __future__ import annotations

import asyncio
import gc
import importlib.abc
import io
import json
import logging
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from graphql import build_schema, parse, validate
from prometheus_client import REGISTRY

from tests.clock import FakeTime
from tests.factories import submission
from tests.sandboxes import sandbox_serving
from tests.xledger.helpers import (
    Forwarding,
    client_for,
    entity,
    post_until_settled,
    target,
    token_for,
)
from worker import logs
from worker.contracts import Receipt, SubmissionFields
from worker.core.endpoints import UrlPolicy
from worker.devenv.sandbox import PROFILES, FaultProfile, XledgerSandbox
from worker.xledger import client as client_module
from worker.xledger.client import ClientSettings, XledgerClient
from worker.xledger.errors import (
    AuthFailed,
    CreditsExhausted,
    RateLimited,
    Refused,
    UnknownOutcome,
    classify_errors,
)
from worker.xledger.never_twice import PostingCall
from worker.xledger.pacing import Pacer, TokenGate
from worker.xledger.refusal_memory import RefusalMemory
from worker.xledger.secrets import SecretStore, Token
from worker.xledger.wire import (
    LOOKUP_ROOTS,
    LookupPage,
    RefusedCode,
    blame,
    lookup_query,
    mutation_inputs,
    node,
    read_answer,
    read_lookup,
    read_mutation,
    refused_code,
    voucher_numbers,
)

TENANT = "t-one"


async def started(
    faults: FaultProfile = PROFILES["none"],
    tenants: tuple[str, ...] = (TENANT,),
    fake: FakeTime | None = None,
    **kw: float,
) -> XledgerSandbox:
    """A sandbox on the test's fake clock, if any: its burst window (Xledger's) and the
    client's own pacing then pass as soon as someone waits for them."""
    if fake is not None:
        kw["clock"] = fake.clock  # type: ignore[assignment]
    entities = {token_for(t): entity(t, owner=42365431 + i) for i, t in enumerate(tenants)}
    sandbox = sandbox_serving(entities, faults=faults, seed=11, **kw)
    await sandbox.start()
    return sandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[XledgerSandbox]:
    sb = await started()
    yield sb
    await sb.stop()


@pytest.fixture
def fake_time() -> FakeTime:
    """Stands still between sleeps: for tests that count seconds and meet no limit error."""
    return FakeTime()


@pytest.fixture
def running_time() -> FakeTime:
    """Runs between sleeps: for tests that wait out the sandbox's limit errors."""
    return FakeTime(running=True)


# What a call holds: none of it may outlive the call in a reference cycle.
# And httpx's, which hold each request's body and answer (encode/httpx#3733).
OURS = (PostingCall, SubmissionFields, Receipt, httpx.Request, httpx.Response)


def paused_gauge(tenant: str) -> float | None:
    return REGISTRY.get_sample_value(
        "xledger_tenant_paused", {"tenant": tenant, "reason": "credits"}
    )


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


async def test_a_finished_call_leaves_no_reference_cycle_holding_its_submissions(
    sandbox,
) -> None:
    """Issue 29: a call's submissions and receipts, and its requests' bodies and answers,
    are freed when the call ends, not left in a reference cycle for Python's rare full
    collections (the retries held the call's own sleep: 430 → 282 MB peak RSS at the month
    start, 50,000 over 356 tenants; each httpx response held its request: 282 → ~245 MB)."""
    async with client_for(sandbox.url, [TENANT]) as c:
        gc.collect()
        gc.disable()
        try:
            subs = [submission(TENANT, i) for i in range(3)]
            result = await c.post(target(TENANT), subs)
            assert len(result.receipts) == 3
            del result, subs
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            left = [type(o).__name__ for o in gc.garbage if isinstance(o, OURS)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == []


class ImportsSeen(importlib.abc.MetaPathFinder):
    """Every module the import system is asked to find (first on sys.meta_path)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        self.names.append(fullname)
        return None  # the other finders find it, or not


async def test_a_call_imports_nothing_once_warm(sandbox) -> None:
    """Issue 29: a request asks the import system for nothing. httpcore imports sniffio on
    every lock and read of a request; while sniffio was not installed each try searched
    sys.path again (~1 ms of CPU per call of 140 payments, 17 % of the client's)."""
    async with client_for(sandbox.url, [TENANT]) as c:
        await c.post(target(TENANT), [submission(TENANT, 0)])  # first use may import
        seen = ImportsSeen()
        sys.meta_path.insert(0, seen)
        try:
            await c.post(target(TENANT), [submission(TENANT, i) for i in range(1, 4)])
        finally:
            sys.meta_path.remove(seen)
    assert seen.names == []


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
    # The lookup, then per halving a refused mutation, the lookup after it (Xledger may
    # have stored part of a refused mass mutation: issue 19) and the good half's mutation;
    # and the refused payment alone is looked up before it is refused (issue 26 N10).
    assert result.requests <= 1 + 3 * 5 + 1 + 1


async def test_a_code_xledger_refused_lately_refuses_a_first_submission_without_a_request(
    sandbox,
) -> None:
    """Issue 20: a refused code costs three requests a batch (the refusal, the lookup after
    it, the rest's mutation). For a while, a payment's first submission that carries it
    is refused with Xledger's own message and not sent, once the lookup (always made:
    issue 26) has found it absent; a resend (not a first evaluation) is sent."""
    first = [submission(TENANT, i) for i in range(10)]
    first[3] = submission(TENANT, 3, account="9999")
    later = [submission(TENANT, i) for i in range(10, 15)]
    later[1] = submission(TENANT, 11, account="9999")
    resend = submission(TENANT, 20, account="9999")
    async with client_for(sandbox.url, [TENANT]) as c:
        await c.post(target(TENANT), first, first={s.payment_id for s in first})
        result = await c.post(target(TENANT), later, first={s.payment_id for s in later})
        again = await c.post(target(TENANT), [resend])  # a resend: not a first evaluation
    [(refused, message)] = result.refused
    assert refused.payment_id == "P-000011"
    assert "account.code: No value matching owner 42365431, code '9999'" in message
    # The lookup and the rest's mutation; the payment with the refused code not sent.
    assert result.requests == 2 and len(result.receipts) == 4
    assert [s.payment_id for s, _ in again.refused] == ["P-000020"]
    # Sent: the lookup, the refused mutation, and its lookup before it is refused (N10).
    assert again.requests == 3


def test_a_remembered_refusal_is_forgotten_after_a_while_or_when_xledger_takes_the_code() -> None:
    now = [0.0]
    memory = RefusalMemory(300.0, lambda: now[0])
    memory.note(TENANT, ["account.code: No value matching owner 42365431, code '9999'."])
    carrying = [submission(TENANT, 1, account="9999")]
    assert list(memory.refused(TENANT, carrying)) == ["P-000001"]
    assert memory.refused("t-other", carrying) == {}  # per tenant
    assert memory.refused(TENANT, [submission(TENANT, 2)]) == {}
    now[0] = 300.0
    assert memory.refused(TENANT, carrying) == {}
    memory.note(TENANT, ["account.code: No value matching owner 42365431, code '9999'."])
    memory.accepted(TENANT, carrying)  # someone added the account in Xledger
    assert memory.refused(TENANT, carrying) == {}


async def test_bad_token_holds_the_batch_without_bisecting(sandbox) -> None:
    c = XledgerClient(
        SecretStore({"XLEDGER_TOKEN_T_ONE": "wrong-token-123456"}),
        policy=UrlPolicy(allow_sandbox=True),
        endpoint_override=sandbox.url,
    )
    async with c:
        result = await c.post(target(TENANT), [submission(TENANT, i) for i in range(20)])
    assert result.requests == 1
    # The token is at fault, not the payments: held for the caller to pause the tenant.
    assert len(result.held) == 20 and not result.failed and not result.refused
    assert "refused the API token" in result.held_why and "wrong-token" not in result.held_why
    assert not sandbox.ledger()
    assert c.token_fingerprint(TENANT) not in (None, "wrong-token-123456")


async def test_missing_token_holds_the_batch_without_any_request(sandbox) -> None:
    async with client_for(sandbox.url, []) as c:
        result = await c.post(target(TENANT), [submission(TENANT, 1)] * 2)
        assert c.token_fingerprint(TENANT) is None
    assert result.requests == 0 and not result.failed
    assert len(result.held) == 2  # a duplicate shares the outcome
    assert "XLEDGER_TOKEN_T_ONE" in result.held_why


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
async def test_every_fault_profile_ends_with_each_payment_once(
    profile: str, running_time: FakeTime
) -> None:
    faults = PROFILES[profile]
    if profile == "slow":
        faults = FaultProfile(slow=0.5, slow_seconds=0.3)
    elif profile == "commit-then-fail":
        faults = FaultProfile(commit_then_fail=0.5, hang_seconds=1.5)
    sb = await started(faults, fake=running_time)
    try:
        subs = [submission(TENANT, i) for i in range(300)]  # two chunks
        async with client_for(sb.url, [TENANT], fake=running_time, max_attempts=30) as c:
            result = await c.post(target(TENANT), subs)
        assert not result.failed and not result.refused
        assert len(result.receipts) == 300
        assert_exactly_once(sb, subs)
    finally:
        await sb.stop()


async def test_commit_then_fail_is_held_to_settle_then_found_by_lookup_not_posted_again() -> None:
    """R14 (decided 12-06): after an unknown outcome nothing of it is sent again; it is held
    for the settle time, then a lookup finds it stored."""
    sb = await started(FaultProfile(commit_then_fail=1.0, hang_seconds=1.5))
    try:
        subs = [submission(TENANT, i) for i in range(10)]
        async with client_for(sb.url, [TENANT], request_deadline_s=2.0, settle_s=2.0) as c:
            first = await c.post(target(TENANT), subs)
            assert not first.receipts and first.unknown == {s.payment_id for s in subs}
            assert first.retry_at is not None and first.retry_at - c.clock() > 1.5
            sb.faults = FaultProfile()
            [*_, last] = await post_until_settled(c, target(TENANT), subs)
        assert all(r.already_present for r in last.receipts) and len(last.receipts) == 10
        assert sb.stats.accepted_batches == 1
        assert_exactly_once(sb, subs)
    finally:
        await sb.stop()


async def test_retries_are_capped_and_payments_known_absent_are_handed_back_as_failed() -> None:
    """A mutation that never reached Xledger (no connection) after the retries: the lookup
    said Xledger lacks them, nothing was sent since, so they fail (a dead letter)."""
    sb = await started()

    def unreachable_for_mutations(request: httpx.Request) -> httpx.Response | None:
        if json.loads(request.content)["query"].lstrip().startswith("mutation"):
            raise httpx.ConnectError("connection refused")
        return None

    try:
        transport = Forwarding(unreachable_for_mutations)
        async with client_for(sb.url, [TENANT], max_attempts=3, transport=transport) as c:
            result = await c.post(target(TENANT), [submission(TENANT, i) for i in range(5)])
        assert len(result.failed) == 5 and result.requests == 1 + 3
        assert {code for _, code, _ in result.failed} == {"transient"}
    finally:
        await sb.stop()


async def test_5xx_on_every_request_holds_the_payments_never_fails_them() -> None:
    """Issue 26 N5: payments never found absent by a lookup may be in Xledger: held, never
    handed back as failed (a dead letter), however many retries are spent."""
    sb = await started(FaultProfile(error_5xx=1.0))
    try:
        async with client_for(sb.url, [TENANT], max_attempts=3) as c:
            result = await c.post(target(TENANT), [submission(TENANT, i) for i in range(5)])
        assert not result.failed and len(result.held) == 5 and result.requests == 3
        assert result.held_reason == "unresolved"
    finally:
        await sb.stop()


# --- limits --------------------------------------------------------------------------------


async def test_acceptance_5000_of_one_tenant_at_once_few_requests_no_burst_error(
    fake_time: FakeTime,
) -> None:
    sb = await started(fake=fake_time)
    try:
        subs = [submission(TENANT, i) for i in range(5000)]
        async with client_for(sb.url, [TENANT], fake=fake_time) as c:
            t0 = fake_time.now
            result = await c.post(target(TENANT), subs)
            elapsed = fake_time.now - t0
        assert len(result.receipts) == 5000
        assert result.requests <= 50, result.requests  # at most 1 request per 100 payments
        assert sb.stats.burst_errors_sent == 0 and sb.stats.spurious_burst_errors_sent == 0
        assert_exactly_once(sb, subs)
        times = sb.stats.request_times[TENANT]  # on the fake clock, as the client's pacing
        assert all(b - a >= 5.0 for a, b in zip(times, times[20:], strict=False))
        assert all(b - a >= 5.0 for a, b in zip(times, times[18:], strict=False))  # headroom
        assert len(times) > 18 and elapsed >= 5.0  # the client did wait for the window
        print(f"\n5000 payments, one tenant: {result.requests} requests in {elapsed:.1f} s")
    finally:
        await sb.stop()


async def test_acceptance_mixed_faults_5000_for_20_tenants_each_payment_exactly_once(
    tmp_path: Path, running_time: FakeTime
) -> None:
    tenants = tuple(f"t-{i:02d}" for i in range(20))
    sb = await started(PROFILES["mixed"], tenants=tenants, fake=running_time)
    sb_faults = PROFILES["mixed"]
    assert (sb_faults.error_5xx, sb_faults.commit_then_fail) == (0.10, 0.05)
    try:
        subs = {t: [submission(t, i) for i in range(250)] for t in tenants}
        async with client_for(sb.url, list(tenants), fake=running_time, max_attempts=30) as c:
            # Each tenant's payments in calls of 25, as the stream's small batches come:
            # many requests, so that every kind of fault happens many times.
            async def tenant_calls(t: str) -> list:
                return [
                    r
                    for i in range(0, 250, 25)
                    for r in await post_until_settled(
                        c, target(t), subs[t][i : i + 25], running_time.sleep
                    )
                ]

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


async def test_ready_in_says_how_long_until_the_budget_has_room_for_a_batch(
    sandbox, fake_time: FakeTime
) -> None:
    async with client_for(sandbox.url, [TENANT], fake=fake_time) as c:
        assert c.ready_in(TENANT) == 0.0
        for i in range(8):  # 16 requests: 16 + 2 still fit under 18 per 5 s
            await c.post(target(TENANT), [submission(TENANT, i)])
        assert c.ready_in(TENANT) == 0.0
        await c.post(target(TENANT), [submission(TENANT, 8)])  # 18 in the window
        wait = c.ready_in(TENANT)
        assert 0.0 < wait <= 5.0
        assert wait == 5.0  # all 18 were sent at one instant of the fake clock
        fake_time.advance(5.0)
        assert c.ready_in(TENANT) == 0.0  # the window has moved past them
        assert c.ready_in("t-unknown-ref") == 0.0  # no token: nothing to wait for


async def test_burst_limit_error_is_waited_out(running_time: FakeTime) -> None:
    sb = await started(burst_limit=3, burst_window_s=0.5, fake=running_time)
    try:
        # A client that does not know the limit is this low meets it, waits, and goes on.
        settings = {"burst_limit": 100, "burst_headroom": 0}
        async with client_for(sb.url, [TENANT], fake=running_time, **settings) as c:
            results = await asyncio.gather(
                *(c.post(target(TENANT), [submission(TENANT, i)]) for i in range(8))
            )
        assert sum(len(r.receipts) for r in results) == 8
        assert sb.stats.burst_errors_sent > 0
        assert running_time.sleeps  # waited as told, on the fake clock
    finally:
        await sb.stop()


async def test_insufficient_credits_pause_that_tenant_only() -> None:
    poor = entity("t-poor", credits=1)
    sb = sandbox_serving({token_for("t-poor"): poor, token_for("t-rich"): entity("t-rich")}, seed=1)
    await sb.start()
    fake = FakeTime(hold=True)  # the pause lasts until the test moves the clock
    try:
        async with client_for(sb.url, ["t-poor", "t-rich"], fake=fake, credits_pause_s=1.0) as c:
            paused = asyncio.create_task(c.post(target("t-poor"), [submission("t-poor", 1)]))
            await asyncio.wait_for(fake.sleeping.wait(), 5)  # t-poor met the credits limit
            assert fake.sleeps == [1.0]  # the configured pause: Xledger's reset is later
            rich = await asyncio.wait_for(c.post(target("t-rich"), [submission("t-rich", 1)]), 5)
            assert len(rich.receipts) == 1 and fake.sleeps == [1.0]  # not held up at all
            assert not paused.done()
            assert paused_gauge("t-poor") == 1
            poor.credits = 10  # credits bought: the first try after the pause goes through
            fake.advance(1.0)
            result = await asyncio.wait_for(paused, 5)
        assert len(result.receipts) == 1
        assert sb.stats.credit_errors_sent == 1
        assert paused_gauge("t-poor") == 0
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
    lookups = [
        lookup_query(roots, details)
        for roots in (LOOKUP_ROOTS, LOOKUP_ROOTS[:1], LOOKUP_ROOTS[1:])
        for details in (False, True)
    ]
    for doc in (client_module.ADD_GL_IMPORT_ITEMS, *lookups):
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


# --- pacing, on its own ------------------------------------------------------------------


def fake_gate(**settings: float) -> tuple[TokenGate, FakeTime]:
    fake = FakeTime()
    s = ClientSettings(**settings)  # type: ignore[arg-type]
    return TokenGate(s, clock=fake.clock, sleep=fake.sleep), fake


async def send(gate: TokenGate, requests: int) -> None:
    for _ in range(requests):
        async with gate.slot(TENANT):
            pass


async def test_pacing_sends_18_at_once_and_holds_the_19th_until_the_oldest_leaves() -> None:
    gate, fake = fake_gate()
    await send(gate, 18)
    assert fake.sleeps == []
    await send(gate, 1)
    assert fake.sleeps == [pytest.approx(5.01)]  # the window, and a little more


async def test_pacing_headroom_is_what_keeps_the_client_below_xledgers_20() -> None:
    gate, fake = fake_gate(burst_headroom=0)
    assert gate.per_window == 20
    await send(gate, 20)
    assert fake.sleeps == []
    await send(gate, 1)
    assert len(fake.sleeps) == 1
    assert fake_gate()[0].per_window == 18  # the default keeps 2 free


async def test_pacing_forgets_requests_older_than_the_window() -> None:
    gate, fake = fake_gate()
    await send(gate, 18)
    fake.advance(5.0)
    await send(gate, 18)
    assert fake.sleeps == []


async def test_pacing_lets_two_requests_of_a_token_be_in_flight_at_once() -> None:
    gate, _ = fake_gate()
    inside = most = 0
    two_inside, release = asyncio.Event(), asyncio.Event()

    async def request() -> None:
        nonlocal inside, most
        async with gate.slot(TENANT):
            inside += 1
            most = max(most, inside)
            if inside == 2:
                two_inside.set()
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(request()) for _ in range(3)]
    await asyncio.wait_for(two_inside.wait(), 5)  # the third ran meanwhile, and is held
    assert inside == 2
    release.set()
    await asyncio.gather(*tasks)
    assert most == 2  # the third went in only when one of the two had left


async def test_ready_in_is_zero_while_the_window_has_room_and_counts_down_after() -> None:
    gate, fake = fake_gate()
    assert gate.ready_in() == 0.0
    await send(gate, 16)
    assert gate.ready_in(2) == 0.0  # 16 + 2 = 18 fit
    await send(gate, 1)
    assert gate.ready_in(1) == 0.0
    assert gate.ready_in(2) == 5.0  # the oldest must leave the window first
    fake.advance(2.0)
    assert gate.ready_in(2) == 3.0
    fake.advance(3.0)
    assert gate.ready_in(2) == 0.0


async def test_credits_pause_holds_the_token_for_the_pause_or_until_xledgers_reset() -> None:
    gate, fake = fake_gate(credits_pause_s=60.0)
    assert gate.pause_for_credits(TENANT, None) == 60.0  # no reset time: the configured pause
    assert gate.pause_for_credits(TENANT, 3600.0) == 60.0  # a later reset: still ours
    assert gate.pause_for_credits(TENANT, 12.5) == 12.5  # a sooner reset: Xledger's
    assert gate.ready_in() == 12.5 and paused_gauge(TENANT) == 1
    await send(gate, 1)
    assert fake.sleeps == [12.5]  # the next request waited out the pause, then went
    assert paused_gauge(TENANT) == 0 and gate.ready_in() == 0.0


def test_pacing_keeps_one_gate_per_token_whoever_uses_it() -> None:
    fake = FakeTime()
    pacer = Pacer(ClientSettings(), clock=fake.clock, sleep=fake.sleep)
    one = pacer.gate(Token("token-one"))
    assert pacer.gate(Token("token-one")) is one
    assert pacer.gate(Token("token-two")) is not one


# --- wire, on its own --------------------------------------------------------------------


def test_r18_nodes_carry_the_lines_fields_and_references_as_codes() -> None:
    debit, credit = submission(TENANT, 1, account="13700", amount="1234.50").lines
    voucher = {
        "trRegNumber": 123456789,
        "transactionSource": {"code": "GL"},
        "postedDate": "2026-11-20",
        "currency": {"code": "NOK"},
        "text": "Barnehage 1",
    }
    assert node(debit, 123456789, "GL") == voucher | {
        "amount": "1234.50",
        "extIdentifier": "flyt:t-one:P-000001:1",
        "account": {"code": "13700"},
        "taxRule": {"code": "0"},
        "glObject1": {"code": "3100"},
    }
    assert node(credit, 123456789, "GL") == voucher | {
        "amount": "-1234.50",
        "extIdentifier": "flyt:t-one:P-000001:2",
        "account": {"code": "1920"},
        "bankAccountRef": {"dbId": 884412},  # R4: the Bankkonti-pkey is a dbId
    }
    by_code = credit.model_copy(update={"bankAccountRef": "BANK-A"})
    assert node(by_code, 1, "GL")["bankAccountRef"] == {"code": "BANK-A"}


def test_r18_each_payment_is_two_nodes_sharing_one_voucher() -> None:
    subs = [submission(TENANT, i) for i in range(3)]
    inputs = mutation_inputs(subs, "GL")
    assert [i["clientId"] for i in inputs] == ["0:1", "0:2", "1:1", "1:2", "2:1", "2:2"]
    vouchers = [i["node"]["trRegNumber"] for i in inputs]
    assert vouchers[0::2] == vouchers[1::2] and len(set(vouchers)) == 3
    assert sum(Decimal(i["node"]["amount"]) for i in inputs[:2]) == 0


def test_voucher_number_is_nine_digits_and_the_same_on_every_resend() -> None:
    subs = [submission(TENANT, i) for i in range(300)]
    numbers = voucher_numbers(subs)
    assert all(100_000_000 <= n <= 999_999_999 for n in numbers.values())
    assert len(set(numbers.values())) == 300
    assert voucher_numbers(subs) == numbers
    assert voucher_numbers(subs[7:8]) == {"P-000007": numbers["P-000007"]}  # alone, too
    # Derived from tenant and payment only: a number Xledger already holds stays valid.
    assert voucher_numbers([submission(TENANT, 0)]) == {"P-000000": 729_939_024}
    assert voucher_numbers([submission("t-other", 0)])["P-000000"] != 729_939_024


def test_voucher_numbers_that_collide_in_one_request_are_stepped_apart() -> None:
    first, second = submission(TENANT, 896), submission(TENANT, 1532)  # same hash number
    assert voucher_numbers([first]) == {"P-000896": 743_687_312}
    assert voucher_numbers([second]) == {"P-001532": 743_687_312}
    both = voucher_numbers([first, second])
    assert both == {"P-000896": 743_687_312, "P-001532": 743_687_313}


def test_lookup_answer_reads_null_edges_as_nothing_and_gives_the_next_cursor() -> None:
    none = {"glImportItems": {"edges": None, "pageInfo": {"hasNextPage": False}}}
    assert read_lookup(none, ["glImportItems"]) == LookupPage([], {})
    edge = {"cursor": "c1", "node": {"dbId": "17", "extIdentifier": "x:1"}}
    twice = {"cursor": "c2", "node": {"dbId": "18", "extIdentifier": "x:1"}}
    more = {"glImportItems": {"edges": [edge, twice], "pageInfo": {"hasNextPage": True}}}
    page = read_lookup(more, ["glImportItems"])
    assert [(n.db_id, n.ext_id) for n in page.nodes] == [(17, "x:1"), (18, "x:1")]  # both kept
    assert page.after == {"glImportItems": "c2"}
    last = {"glImportItems": {"edges": [edge], "pageInfo": {"hasNextPage": False}}}
    assert read_lookup(last, ["glImportItems"]).after == {}


def test_mutation_answer_is_matched_back_by_client_id_only() -> None:
    subs = [submission(TENANT, 0), submission(TENANT, 1)]
    edges = [
        {"clientId": "1:2", "node": {"dbId": 12}},
        {"clientId": "0:1", "node": {"dbId": "1"}},
        {"clientId": "7:1", "node": {"dbId": 70}},  # no such payment in the request
        {"clientId": "junk", "node": {"dbId": 99}},
        {"node": {"dbId": 98}},
    ]
    got = read_mutation({"addGLImportItems": {"edges": edges}}, subs)
    assert got == {("P-000001", 2): 12, ("P-000000", 1): 1}


def test_answer_with_errors_raises_what_they_mean_and_without_data_is_a_refusal() -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    assert read_answer(200, {"data": {"x": 1}}, now) == {"x": 1}
    burst = {"errors": [{"code": "BAD_REQUEST.BURST_RATE_LIMIT_REACHED", "message": ""}]}
    with pytest.raises(RateLimited):
        read_answer(200, burst, now)
    with pytest.raises(Refused, match="HTTP 400: unexpected answer"):
        read_answer(400, {"data": {"x": 1}}, now)
    with pytest.raises(Refused, match="HTTP 200: unexpected answer"):
        read_answer(200, {"data": None}, now)


def test_refusal_naming_a_code_is_read_as_the_field_and_the_code() -> None:
    message = "account.code: No value matching owner 42365431, code '9999'."
    assert refused_code(message) == RefusedCode("account", "9999", message)
    by_db_id = "bankAccountRef.dbId: No value matching owner 42365431, dbId 884413."
    assert refused_code(by_db_id) == RefusedCode("bankAccountRef", "884413", by_db_id)
    assert refused_code("Voucher 123 does not balance.") is None


def test_refusal_blames_exactly_the_payments_that_carry_the_refused_code() -> None:
    subs = [submission(TENANT, i) for i in range(4)]
    subs[1] = submission(TENANT, 1, account="9999")
    subs[3] = submission(TENANT, 3, account="9999")
    message = "account.code: No value matching owner 42365431, code '9999'."
    assert blame([message, message], subs) == {"P-000001": message, "P-000003": message}
    assert blame(["Voucher 123 does not balance."], subs) == {}  # the caller bisects


class OutageTime(FakeTime):
    """Fake time in which Xledger (the sandbox) comes back after `outage_s`."""

    def __init__(self, sandbox: XledgerSandbox, port: int, outage_s: float) -> None:
        super().__init__()
        self.sandbox, self.port, self.back_at = sandbox, port, self.now + outage_s

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if self.back_at is not None and self.now >= self.back_at:
            self.back_at = None
            await self.sandbox.start(port=self.port)


async def test_an_xledger_outage_of_minutes_is_waited_out_not_given_up() -> None:
    """Issue 10: Xledger down for minutes: the tenant waits, nothing is lost, posting resumes."""
    sb = await started()
    url = sb.url
    assert url is not None
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    await sb.stop()  # connection refused from now on: nothing reaches Xledger
    fake = OutageTime(sb, port, outage_s=6 * 60)
    try:
        async with client_for(
            url, [TENANT], fake=fake, backoff_cap_s=30.0, outage_patience_s=30 * 60
        ) as c:
            result = await c.post(target(TENANT), [submission(TENANT, i) for i in range(3)])
        assert not result.failed and len(result.receipts) == 3
        assert sum(fake.sleeps) >= 6 * 60 and len(fake.sleeps) > 8  # past max_attempts
        assert len(sb.ledger()) == 6
    finally:
        await sb.stop()


async def test_an_outage_longer_than_the_patience_holds_the_batch_never_dead_letters_it() -> None:
    """Xledger unreachable past the patience: the payments were never found absent (the
    lookup never answered), so they may be in Xledger (a crash before this process, say):
    held for a later call, never a dead letter (R14, decided 12-06)."""
    sb = await started()
    url = sb.url
    assert url is not None
    await sb.stop()
    fake = FakeTime()
    async with client_for(url, [TENANT], fake=fake, backoff_cap_s=30.0, outage_patience_s=120) as c:
        result = await c.post(target(TENANT), [submission(TENANT, 1)])
    assert not result.failed and [s.payment_id for s in result.held] == ["P-000001"]
    assert 120 <= sum(fake.sleeps) < 120 + 30 + 1  # given up at the first attempt past it


async def test_a_fence_that_says_no_stops_the_mutation_after_the_lookup(sandbox) -> None:
    asked: list[bool] = []

    def fence() -> bool:
        asked.append(True)
        return False  # the payments moved to another worker meanwhile

    async with client_for(sandbox.url, [TENANT]) as c:
        result = await c.post(target(TENANT), [submission(TENANT, i) for i in range(3)], fence)
    assert asked and len(result.abandoned) == 3
    assert not result.receipts and not result.failed and not result.held
    assert result.requests == 1  # the lookup only
    assert not sandbox.ledger()
