"""Shared set-up for client tests: submissions, entities and a client bound to a sandbox."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx

from worker.contracts import GLLine, Submission
from worker.contracts.submission import ext_identifier
from worker.core.endpoints import UrlPolicy
from worker.devenv.sandbox import Entity
from worker.xledger.client import ClientSettings, Target, XledgerClient
from worker.xledger.secrets import SecretStore, env_name

ACCOUNTS = {"13700", "10890", "1920"}


def submission(tenant: str, i: int, account: str = "13700", amount: str = "1234.50") -> Submission:
    pid = f"P-{i:06d}"
    common = {"currency": "NOK", "postedDate": date(2026, 11, 20), "text": f"Barnehage {i}"}
    lines = [
        GLLine(
            extIdentifier=ext_identifier(tenant, pid, 1),
            account=account,
            amount=Decimal(amount),
            taxRule="0",
            glObject1="3100",
            **common,
        ),
        GLLine(
            extIdentifier=ext_identifier(tenant, pid, 2),
            account="1920",
            amount=-Decimal(amount),
            bankAccountRef="884412",
            **common,
        ),
    ]
    return Submission(
        tenant_id=tenant,
        payment_id=pid,
        event_id=f"evt-{i}",
        snapshot_version=1,
        dimensions={"1": account, "2": "3100"},
        vat_code="0",
        lines=lines,
        created_at=datetime(2026, 11, 20, tzinfo=UTC),
    )


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


class FakeTime:
    """A clock and a sleep for the client in which nobody waits: a sleep moves the clock on
    at once. Limits' windows pass without the test waiting for them.

    By default the clock stands still between sleeps, so that a test can count seconds
    exactly. With `running=True` it also runs with the wall clock between sleeps: the
    sandbox's reset times are wall-clock instants, and a wait computed from one is only
    long enough when the time its answer took has passed on this clock too. With
    `hold=True` a sleep lasts until the test moves the clock with `advance`.
    """

    def __init__(self, *, running: bool = False, hold: bool = False) -> None:
        self.running = running
        self.hold = hold
        self.sleeps: list[float] = []  # every sleep asked for, in order
        self.sleeping = asyncio.Event()  # set once a sleep is being held (hold=True)
        self._started = time.monotonic()
        self._offset = 1_000.0  # where the clock began, plus every sleep and advance
        self._moved = asyncio.Event()

    @property
    def now(self) -> float:
        ran = time.monotonic() - self._started if self.running else 0.0
        return self._offset + ran

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if not self.hold:
            self._offset += seconds
            await asyncio.sleep(0)  # a sleep is a suspension point: the others run meanwhile
            return
        deadline = self.now + seconds
        while self.now < deadline:
            self.sleeping.set()
            self._moved.clear()
            await self._moved.wait()

    def advance(self, seconds: float) -> None:
        self._offset += seconds
        self._moved.set()


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


def target(tenant: str) -> Target:
    return Target(tenant_id=tenant, url="https://www.xledger.net/graphql", token_ref=tenant)
