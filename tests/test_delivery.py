"""Outputs are written however long the broker takes: a failed write is retried, never dropped."""

from __future__ import annotations

import asyncio
from typing import Any

from worker.stream.delivery import Delivery, Output


class FlakyProducer:
    """Refuses the first `failures` writes (as a broker that is away would), then takes all."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[tuple[str, bytes | None]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures > 0:
            self.failures -= 1
            future.set_exception(TimeoutError("broker away"))
        else:
            self.written.append((topic, value))
            future.set_result(None)
        return future


async def test_deliver_retries_failed_writes_until_all_are_written(monkeypatch) -> None:
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    producer = FlakyProducer(failures=5)
    outputs = [Output("t", b"k", f"v{i}".encode()) for i in range(3)]
    await Delivery(producer).deliver(outputs)
    assert sorted(v for _, v in producer.written) == [b"v0", b"v1", b"v2"]
    assert sleeps == [0.5, 1.0]  # backoff between rounds; every output eventually written
