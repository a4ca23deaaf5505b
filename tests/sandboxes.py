"""Xledger sandboxes for tests, built in one place: a sandbox serving entities to tokens
(`sandbox_serving`), one with an entity per register snapshot and the worker's token
variables (`sandbox_for`), and a factory that stops every sandbox it made when the test
ends (`sandbox_factory`, for the sandbox's own tests and the client's)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from worker.contracts import RegisterSnapshot
from worker.devenv.sandbox import Entity, XledgerSandbox, entity_from_snapshot
from worker.xledger.secrets import env_name

MakeSandbox = Callable[..., Awaitable[XledgerSandbox]]


def sandbox_serving(entities: Mapping[str, Entity], **settings: Any) -> XledgerSandbox:
    """A sandbox (not started) serving each entity to its token (token → entity), with
    these settings (faults, seed, clock, …)."""
    sandbox = XledgerSandbox(**settings)
    for token, entity in entities.items():
        sandbox.add_entity(token, entity)
    return sandbox


def sandbox_for(
    snapshots: Iterable[RegisterSnapshot], name: str, first_owner: int, **settings: Any
) -> tuple[XledgerSandbox, dict[str, str]]:
    """A sandbox (not started) with one entity per snapshot, knowing every code its
    registers can produce (owner ids from `first_owner` on, in order), each served to a
    token of its own (`{name}-token-{i}-…`); returns it and the tokens as the worker reads
    them (XLEDGER_TOKEN_* → token). `entity_of` finds an entity to change."""
    entities, tokens = {}, {}
    for i, snap in enumerate(snapshots):
        token = f"{name}-token-{i}-0123456789"
        entities[token] = entity_from_snapshot(snap, first_owner + i)
        tokens[env_name(snap.settings.token_ref)] = token
    return sandbox_serving(entities, **settings), tokens


def entity_of(sandbox: XledgerSandbox, tenant: str) -> Entity:
    """The entity the sandbox serves as `tenant`: the sandbox's own, so a change to what it
    knows, or to its credits, changes what the sandbox answers."""
    [entity] = [e for e in sandbox.entities() if e.name == tenant]
    return entity


@asynccontextmanager
async def sandbox_factory(
    token: str, default_entity: Callable[[], Entity], seed: int
) -> AsyncIterator[MakeSandbox]:
    """`make(entity=None, **settings)`: a started sandbox serving `entity` (or the default
    one) to `token`; its faults seeded with `seed` unless the settings name one."""
    started: list[XledgerSandbox] = []

    async def make(entity: Entity | None = None, **kwargs: Any) -> XledgerSandbox:
        sandbox = sandbox_serving(
            {token: entity or default_entity()}, seed=kwargs.pop("seed", seed), **kwargs
        )
        await sandbox.start()
        started.append(sandbox)
        return sandbox

    try:
        yield make
    finally:
        for sandbox in started:
            await sandbox.stop()
