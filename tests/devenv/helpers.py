"""The sandbox tests' requests, as the client will send them: tokens distinctive enough
that a leak into any answer is caught, the documents, and an entity and a voucher to post."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from worker.devenv.sandbox import Entity

TOKEN = "tok-Sandbox-Secret-9f3a1c"  # distinctive, so a leak into any answer is caught
OTHER_TOKEN = "tok-Other-Secret-77b0e2"
OWNER = 42365431

MUTATION = """
mutation ($inputs: [AddGLImportItemsInput!]!) {
  addGLImportItems(inputs: $inputs) { edges { clientId node { dbId extIdentifier amount } } }
}
"""
LOOKUP = """
query ($ids: [String!], $first: Int, $after: String) {
  glImportItems(first: $first, after: $after, filter: {extIdentifier_in: $ids}) {
    edges { cursor node { dbId extIdentifier amount account { code } } }
    pageInfo { hasNextPage hasPreviousPage }
  }
}
"""
PING = "{ glImportItems(first: 1) { pageInfo { hasNextPage } } }"


def make_entity(name: str = "t-test", **overrides: Any) -> Entity:
    fields: dict[str, Any] = {
        "name": name,
        "owner_db_id": OWNER,
        "accounts": {"10890", "13750", "1920"},
        "gl_objects": {"3100", "252"},
        "projects": {"PR-44"},
        "tax_rules": {"0", "1"},
        "bank_accounts": {884412},
    }
    return Entity(**(fields | overrides))


def line(ext: str, amount: Any, *, tr: int = 17, **node: Any) -> dict[str, Any]:
    base = {
        "trRegNumber": tr,
        "postedDate": "2026-11-20",
        "account": {"code": "10890"},
        "amount": amount,
        "currency": {"code": "NOK"},
        "text": "Fosterhjemsgodtgjørelse november",
        "extIdentifier": ext,
    }
    return {"clientId": ext, "node": base | node}


def voucher(payment: str, amount: str = "17210.00", *, tr: int = 17) -> list[dict[str, Any]]:
    """One payment as Xledger wants it: the expense line and the Motkonto line."""
    return [
        line(
            f"flyt:t-test:{payment}:1",
            amount,
            tr=tr,
            glObject1={"code": "3100"},
            glObject2={"code": "252"},
            project={"code": "PR-44"},
            taxRule={"code": "0"},
        ),
        line(
            f"flyt:t-test:{payment}:2",
            f"-{amount}",
            tr=tr,
            account={"code": "1920"},
            bankAccountRef={"dbId": 884412},
        ),
    ]


Gql = Callable[..., Awaitable[httpx.Response]]
