"""Xledger sandboxes a test starts: a factory that stops every sandbox it made when the
test ends, for the sandbox's own tests and the client's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from worker.devenv.sandbox import Entity, XledgerSandbox

MakeSandbox = Callable[..., Awaitable[XledgerSandbox]]


@asynccontextmanager
async def sandbox_factory(
    token: str, default_entity: Callable[[], Entity], seed: int
) -> AsyncIterator[MakeSandbox]:
    """`make(entity=None, **settings)`: a started sandbox serving `entity` (or the default
    one) to `token`; its faults seeded with `seed` unless the settings name one."""
    started: list[XledgerSandbox] = []

    async def make(entity: Entity | None = None, **kwargs: Any) -> XledgerSandbox:
        sandbox = XledgerSandbox(seed=kwargs.pop("seed", seed), **kwargs)
        sandbox.add_entity(token, entity or default_entity())
        await sandbox.start()
        started.append(sandbox)
        return sandbox

    try:
        yield make
    finally:
        for sandbox in started:
            await sandbox.stop()
