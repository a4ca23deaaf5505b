"""Shared set-up for client tests: submissions, entities and a client bound to a sandbox."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from worker.contracts import GLLine, Submission
from worker.contracts.submission import ext_identifier
from worker.core.endpoints import UrlPolicy
from worker.xledger.client import ClientSettings, Target, XledgerClient
from worker.xledger.sandbox import Entity
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


def client_for(url: str, tenants: list[str], **settings: float) -> XledgerClient:
    environ = {env_name(t): token_for(t) for t in tenants}
    defaults = {"timeout_s": 1.0, "backoff_base_s": 0.05, "backoff_cap_s": 0.5}
    return XledgerClient(
        SecretStore(environ),
        policy=UrlPolicy(allow_sandbox=True),
        endpoint_override=url,
        settings=ClientSettings(**(defaults | settings)),  # type: ignore[arg-type]
    )


def target(tenant: str) -> Target:
    return Target(tenant_id=tenant, url="https://www.xledger.net/graphql", token_ref=tenant)
