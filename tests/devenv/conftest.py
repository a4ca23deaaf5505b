"""The sandbox tests' fixtures: an HTTP client, a sandbox factory (every sandbox it made is
stopped after the test), a sandbox, and `gql`, which checks every answer for a leaked
token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.devenv.helpers import OTHER_TOKEN, TOKEN, Gql, make_entity
from tests.sandboxes import MakeSandbox, sandbox_factory
from worker.devenv.sandbox import XledgerSandbox


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


@pytest.fixture
async def make_sandbox() -> AsyncIterator[MakeSandbox]:
    async with sandbox_factory(TOKEN, make_entity, seed=7) as make:
        yield make


@pytest.fixture
async def sandbox(make_sandbox: Callable[..., Awaitable[XledgerSandbox]]) -> XledgerSandbox:
    return await make_sandbox()


@pytest.fixture
def gql(client: httpx.AsyncClient) -> Gql:
    """POST a GraphQL request; every answer is checked for a leaked token."""

    async def post(
        sandbox: XledgerSandbox,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        assert sandbox.url
        sent = dict(headers or {})
        if token is not None and "Authorization" not in sent:
            sent["Authorization"] = f"token {token}"
        r = await client.post(
            sandbox.url, json={"query": query, "variables": variables}, headers=sent
        )
        for secret in (TOKEN, OTHER_TOKEN, token or TOKEN):
            assert secret not in r.text
        return r

    return post
