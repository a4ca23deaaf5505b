"""Shared set-up for the client tests: entities, tokens and a client bound to a sandbox
(submissions: `tests/factories.py`; a fake clock: `tests/clock.py`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from tests.clock import FakeTime
from worker.contracts import Submission
from worker.core.endpoints import UrlPolicy
from worker.devenv.sandbox import Entity
from worker.xledger.client import ClientSettings, PostResult, Target, XledgerClient
from worker.xledger.secrets import SecretStore, env_name

ACCOUNTS = {"13700", "10890", "1920"}


def entity(tenant: str, owner: int = 42365431, credits: int | None = None) -> Entity:
    return Entity(
        name=tenant,
        owner_db_id=owner,
        accounts=set(ACCOUNTS),
        gl_objects={"3100"},
        projects=set(),
        tax_rules={"0", "1"},
        bank_accounts={884412},
        credits=credits,
    )


def token_for(tenant: str) -> str:
    return f"sbx-token-{tenant}-9f8e7d6c5b4a"


def client_for(
    url: str,
    tenants: list[str],
    *,
    fake: FakeTime | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **settings: float,
) -> XledgerClient:
    """A client of the sandbox at `url` with these tenants' tokens; on `fake` time if given;
    through `transport` (a fault-injecting one, say) if given."""
    environ = {env_name(t): token_for(t) for t in tenants}
    # No outage patience unless a test asks: most give up after max_attempts at once.
    defaults = {
        "timeout_s": 1.0,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.5,
        "outage_patience_s": 0.0,
    }
    return XledgerClient(
        SecretStore(environ),
        policy=UrlPolicy(allow_sandbox=True),
        endpoint_override=url,
        settings=ClientSettings(**(defaults | settings)),  # type: ignore[arg-type]
        transport=transport,
        clock=fake.clock if fake else time.monotonic,
        sleep=fake.sleep if fake else asyncio.sleep,
    )


class Forwarding(httpx.AsyncBaseTransport):
    """The network, with `rule` asked first: it may raise (a connection refused) or answer
    in Xledger's place; None forwards the request."""

    def __init__(self, rule: Callable[[httpx.Request], httpx.Response | None]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.rule = rule

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.rule(request)
        return answer if answer is not None else await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def target(tenant: str) -> Target:
    return Target(tenant_id=tenant, url="https://www.xledger.net/graphql", token_ref=tenant)


async def post_until_settled(
    c: XledgerClient,
    to: Target,
    subs: list[Submission],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rounds: int = 30,
) -> list[PostResult]:
    """Post as the posting loop does: what comes back held is posted again (lookup first)
    once its `retry_at` has come (the settle time after an unknown outcome)."""
    results = []
    left = subs
    for _ in range(rounds):
        result = await c.post(to, left)
        results.append(result)
        if not result.held:
            return results
        left = result.held
        await sleep(max(0.0, (result.retry_at or c.clock()) - c.clock()))
    raise AssertionError(f"{len(left)} payment(s) still held after {rounds} rounds")
