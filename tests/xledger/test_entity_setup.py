"""Reading an Xledger entity's setup (`worker/xledger/entity_setup.py`), against the real
sandbox over HTTP: what is read, paging, pacing, retries, the token, and the sandbox's
schema held to the exact documents the client sends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from graphql import parse, validate

from tests.clock import FakeTime
from tests.sandboxes import MakeSandbox, sandbox_factory
from worker.core.endpoints import UrlPolicy
from worker.demo.harness import start_demo_sandbox
from worker.devenv.sandbox import Entity, FaultProfile, XledgerSandbox
from worker.devenv.sandbox.entities import DimensionKind
from worker.devenv.sandbox.schema import xledger_schema
from worker.xledger.client import ClientSettings, Target
from worker.xledger.entity_setup import (
    EntitySetup,
    SetupReader,
    SetupUnreadable,
    field_key,
)
from worker.xledger.errors import AuthFailed
from worker.xledger.secrets import MissingToken, SecretStore, env_name
from worker.xledger.setup_wire import (
    ACCOUNTS,
    BANK_ACCOUNTS,
    CURRENCIES,
    ENTITIES,
    OBJECT_KINDS,
    PROJECTS,
    ListRead,
    setup_document,
    values_read,
)

TOKEN = "tok-Setup-Secret-5e1d0c"  # distinctive: a leak anywhere is caught
TENANT = "t-setup"
URL = "https://www.xledger.net/graphql"


def target(tenant: str = TENANT, url: str = URL, test_tenant: bool = False) -> Target:
    return Target(tenant, url, tenant, test_tenant)


def entity(**overrides: Any) -> Entity:
    fields: dict[str, Any] = {
        "name": TENANT,
        "owner_db_id": 42365431,
        "accounts": {"10890", "13700", "1920"},
        "gl_objects": {"3100", "252"},
        "projects": {"PR-44"},
        "tax_rules": {"0", "1"},
        "bank_accounts": {884412},
        "dimension_kinds": {
            "glObject1": DimensionKind("Ansvar", {"3100"}),
            "glObject2": DimensionKind("Tjeneste", {"252"}),
        },
        "bank_account_links": {884412: "1920"},
    }
    return Entity(**(fields | overrides))


class Recording(httpx.AsyncBaseTransport):
    """Every request goes to the sandbox over real HTTP; its body is kept for the test."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def make_sandbox() -> AsyncIterator[MakeSandbox]:
    async with sandbox_factory(TOKEN, entity, seed=3) as make:
        yield make


def reader_for(
    sandbox: XledgerSandbox, environ: dict[str, str] | None = None, **kw: Any
) -> SetupReader:
    assert sandbox.url
    return SetupReader(
        SecretStore({env_name(TENANT): TOKEN} if environ is None else environ),
        policy=UrlPolicy(allow_sandbox=True),
        endpoint_override=sandbox.url,
        **kw,
    )


# --- what is read ------------------------------------------------------------------------


async def test_the_demo_entity_is_read_whole_in_three_requests() -> None:
    sandbox, environ = await start_demo_sandbox()
    try:
        assert sandbox.url
        async with SetupReader(
            SecretStore(environ),
            policy=UrlPolicy(allow_sandbox=True),
            endpoint_override=sandbox.url,
        ) as reader:
            setup = await reader.read(
                target("t-vestfold-bv"), ["glObject1", "glObject2"], projects=True
            )
    finally:
        await sandbox.stop()
    assert setup.requests == 3 and sandbox.stats.queries == 3
    assert set(setup.accounts) == {
        "10890", "10891", "10892", "10893", "13700", "13750", "14700", "1920"
    }  # fmt: skip
    [ansvar] = setup.field_kinds("glObject1") or []
    [tjeneste] = setup.field_kinds("glObject2") or []
    assert (ansvar.name, tjeneste.name) == ("Ansvar", "Tjeneste/Funksjon")
    assert set(setup.values[ansvar.db_id]) == {"3000", "3100", "3110", "3200"}
    assert set(setup.values[tjeneste.db_id]) == {"251", "2510", "252", "2520"}
    assert set(setup.tax_codes() or {}) == {"0", "1", "11", "13"}
    assert {b.db_id for b in setup.bank_accounts_linked_to("1920")} == {884412, 884413}
    assert {"PR-44", "P-REFUSJON-7"} <= set(setup.projects or {})
    assert {"NOK", "EUR"} <= set(setup.currencies)
    assert setup.entities and setup.entities[0].db_id == 42_365_431


async def test_the_object_values_of_a_field_are_its_kinds_only(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox()
    async with reader_for(sandbox) as reader:
        setup = await reader.read(target(), ["glObject1", "glObject2"])
    assert setup.object_value("glObject1", "3100") is not None
    assert setup.object_value("glObject1", "252") is None  # Tjeneste's, not Ansvar's
    assert setup.object_value("glObject2", "252") is not None
    assert setup.field_kinds("glObject3") == []  # Xledger said: nothing set up there
    assert setup.projects is None  # not asked: no dimension posts to `project`


async def test_without_a_gl_setup_every_kind_but_tax_rule_is_searched(
    make_sandbox: MakeSandbox,
) -> None:
    sandbox = await make_sandbox(entity(dimension_kinds={}))
    async with reader_for(sandbox) as reader:
        setup = await reader.read(target(), ["glObject1"])
    assert not setup.setup_known() and setup.field_kinds("glObject1") is None
    assert setup.object_value("glObject1", "3100") is not None  # found in GL_OBJECTS
    assert setup.object_value("glObject1", "0") is None  # a VAT code is no dimension value


async def test_a_bank_account_without_a_link_has_no_account(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(entity(bank_account_links={884413: "1920"}))
    async with reader_for(sandbox) as reader:
        setup = await reader.read(target())
    assert setup.bank_accounts[884412].account_db_id is None
    linked = setup.bank_accounts[884413].account_db_id
    assert setup.account_code(linked) == "1920"


def test_gl_field_names_are_compared_however_xledger_spells_them() -> None:
    assert {field_key(n) for n in ("glObject1", "GL_OBJECT_1", "GLObject1", "globject 1")} == {
        "globject1"
    }
    assert field_key("glObject1") != field_key("glObject2")


# --- paging -------------------------------------------------------------------------------


async def test_every_page_is_read_and_a_next_page_asks_only_lists_that_have_one(
    make_sandbox: MakeSandbox,
) -> None:
    many = {f"{4000 + i}" for i in range(23)}
    sandbox = await make_sandbox(entity(accounts=many | {"1920"}))
    recording = Recording()
    async with reader_for(sandbox, page_size=10, transport=recording) as reader:
        setup = await reader.read(target(), ["glObject1"])
    assert set(setup.accounts) == many | {"1920"}  # 24 accounts: three pages of 10
    first, second, third = (b["query"] for b in recording.bodies[:3])
    assert all(root in first for root in ("currencies:", "accounts:", "objectKinds:"))
    for later in (second, third):
        assert "accounts:" in later and "currencies:" not in later and "objectKinds" not in later
    assert recording.bodies[2]["variables"]["after_accounts"]  # a cursor from page two
    assert setup.requests == len(recording.bodies) == 5  # + entities + object values


# --- the schema, held to what the client sends -------------------------------------------


async def test_the_sandbox_schema_validates_every_document_the_client_sends(
    make_sandbox: MakeSandbox,
) -> None:
    sandbox = await make_sandbox()
    recording = Recording()
    async with reader_for(sandbox, page_size=2, transport=recording) as reader:
        await reader.read(target(), ["glObject1", "glObject2"], projects=True)
    schema = xledger_schema()
    sent = {b["query"] for b in recording.bodies}
    assert len(sent) >= 4  # lists, next pages, entities, object values
    for query in sent:
        assert validate(schema, parse(query)) == [], query
    # Every root the client can ask, every combination it builds, is valid too.
    every = [ListRead(r, r) for r in (CURRENCIES, ACCOUNTS, OBJECT_KINDS, BANK_ACCOUNTS)]
    every += [ListRead(PROJECTS, PROJECTS), values_read(14), values_read(1001)]
    for doc in (setup_document(every), setup_document([ListRead(ENTITIES, ENTITIES)])):
        assert validate(schema, parse(doc)) == [], doc
    # The check can fail: a field the schema lacks is an error, as in Xledger.
    wrong = setup_document([ListRead(ACCOUNTS, ACCOUNTS)]).replace("posting", "postable")
    assert validate(schema, parse(wrong))


# --- the token and R2 ---------------------------------------------------------------------


async def test_a_token_xledger_refuses_is_auth_failed_and_never_shown(
    make_sandbox: MakeSandbox,
) -> None:
    sandbox = await make_sandbox()
    wrong = "tok-Wrong-Secret-c0ffee"
    async with reader_for(sandbox, {env_name(TENANT): wrong}) as reader:
        with pytest.raises(AuthFailed) as caught:
            await reader.read(target())
    assert wrong not in str(caught.value) and sandbox.stats.auth_failures == 1


async def test_a_missing_token_sends_nothing(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox()
    async with reader_for(sandbox, {}) as reader:
        with pytest.raises(MissingToken):
            await reader.read(target())
    assert sandbox.stats.requests == 0


async def test_a_url_r2_does_not_allow_is_never_sent_the_token(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox()
    async with reader_for(sandbox) as reader:
        with pytest.raises(SetupUnreadable, match="not an allowed Xledger URL"):
            await reader.read(target(url="https://xledger.example.com/graphql"))
        with pytest.raises(SetupUnreadable, match="not an allowed"):  # demo: test tenants only
            await reader.read(target(url="https://demo.xledger.net/graphql"))
        setup = await reader.read(target(url="https://demo.xledger.net/graphql", test_tenant=True))
    assert setup.accounts
    assert sandbox.stats.requests == setup.requests


def test_an_endpoint_override_outside_sandbox_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="sandbox"):
        SetupReader(SecretStore({}), endpoint_override="http://127.0.0.1:9/graphql")
    with pytest.raises(ValueError, match="sandbox"):
        SetupReader(
            SecretStore({}),
            policy=UrlPolicy(allow_sandbox=True),
            endpoint_override="http://10.0.0.7:8080/graphql",
        )


# --- failures, limits and pacing ----------------------------------------------------------


async def test_server_errors_are_retried_until_xledger_answers(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(faults=FaultProfile(error_5xx=0.4), seed=1)
    fake = FakeTime()
    async with reader_for(sandbox, sleep=fake.sleep, clock=fake.clock, max_attempts=10) as reader:
        setup = await reader.read(target(), ["glObject1"])
    assert sandbox.stats.faults.get("5xx", 0) > 0
    assert set(setup.accounts) == {"10890", "13700", "1920"}
    assert setup.requests == sandbox.stats.requests


async def test_xledger_failing_every_time_is_unreadable_after_the_attempts(
    make_sandbox: MakeSandbox,
) -> None:
    sandbox = await make_sandbox(faults=FaultProfile(error_5xx=1.0))
    fake = FakeTime()
    async with reader_for(sandbox, sleep=fake.sleep, clock=fake.clock) as reader:
        with pytest.raises(SetupUnreadable, match="after 4 attempts") as caught:
            await reader.read(target())
    assert sandbox.stats.requests == 4 and fake.sleeps == [0.5, 1.0, 2.0]
    assert TOKEN not in str(caught.value)


async def test_used_up_credits_are_unreadable_at_once(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(entity(credits=0))
    async with reader_for(sandbox) as reader:
        with pytest.raises(SetupUnreadable, match="INSUFFICIENT_CREDITS"):
            await reader.read(target())
    assert sandbox.stats.requests == 1  # not waited out for 20 minutes in a command


async def test_reads_are_paced_per_token_and_never_meet_xledgers_limit(
    make_sandbox: MakeSandbox,
) -> None:
    fake = FakeTime()
    # Xledger's limit here is 4 per 5 s; the reader keeps one below it, as the worker does.
    sandbox = await make_sandbox(
        entity(accounts={f"{5000 + i}" for i in range(9)}), burst_limit=4, clock=fake.clock
    )
    pacing = ClientSettings(burst_limit=4, burst_headroom=1)
    async with reader_for(
        sandbox, page_size=1, pacing=pacing, sleep=fake.sleep, clock=fake.clock
    ) as reader:
        setup: EntitySetup = await reader.read(target())
    # 10 accounts (1920 is linked to the bank account), a page each; entities; VAT codes.
    assert len(setup.accounts) == 10 and setup.requests == sandbox.stats.requests == 13
    assert sandbox.stats.burst_errors_sent == 0
    assert fake.sleeps and all(s <= 5.1 for s in fake.sleeps)  # waited for room, briefly
    times = sandbox.stats.request_times[TENANT]
    assert all(b - a >= 5.0 for a, b in zip(times, times[3:], strict=False))  # ≤ 3 per 5 s


async def test_xledger_s_words_in_a_refused_read_carry_no_token() -> None:
    """The reader's errors go through the one masking (`logs.mask`) as the client's do:
    a refusal that echoes the token says `***` instead."""

    def echoes_the_token(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"errors": [{"message": f"Invalid near {TOKEN}"}]})

    async with SetupReader(
        SecretStore({env_name(TENANT): TOKEN}),
        policy=UrlPolicy(allow_sandbox=True),
        endpoint_override="http://127.0.0.1:9/graphql",
        transport=httpx.MockTransport(echoes_the_token),
    ) as reader:
        with pytest.raises(SetupUnreadable) as caught:
            await reader.read(target())
    assert TOKEN not in str(caught.value) and "Invalid near ***" in str(caught.value)
