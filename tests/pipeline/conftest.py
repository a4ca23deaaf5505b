"""The pipeline tests' fixtures: the Xledger sandbox with the demo tenants."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from worker.demo.harness import start_demo_sandbox
from worker.devenv.sandbox import XledgerSandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[XledgerSandbox, dict[str, str]]]:
    box, tokens = await start_demo_sandbox()
    try:
        yield box, tokens
    finally:
        await box.stop()
