"""Outputs are written however long the broker takes: a failed write is retried, never dropped."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError

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


class SizeLimitedProducer:
    """Refuses every record larger than `limit` bytes, as a broker refuses one over its
    max.message.bytes (aiokafka raises MessageSizeTooLargeError)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.written: list[tuple[str, bytes | None]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if len(value or b"") > self.limit:
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.written.append((topic, value))
            future.set_result(None)
        return future


def as_dead_letter(out: Output, exc: BaseException) -> Output:
    return Output("dlq", out.key, b"dead:" + out.source, [("dlq.reason", b"unwritable")])


async def test_an_output_the_broker_never_takes_dead_letters_its_input_and_the_batch_goes_on(
    monkeypatch,
) -> None:
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    producer = SizeLimitedProducer(limit=100)
    huge, small = b"event-huge", b"event-small"
    outputs = [
        Output("submissions", b"t", b"x" * 500, source=huge),
        Output("submissions", b"t", b"fine", source=small),
    ]
    dead = await Delivery(producer, as_dead_letter).deliver(outputs)
    assert dead == {id(huge)}
    assert producer.written == [("submissions", b"fine"), ("dlq", b"dead:event-huge")]
    assert sleeps == []  # not retried: no retry can cure it


async def test_without_an_input_to_blame_an_oversized_record_is_retried_not_dropped(
    monkeypatch,
) -> None:
    sleeps: list[float] = []
    producer = SizeLimitedProducer(limit=100)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        producer.limit = 1000  # an operator raised the topic's limit

    monkeypatch.setattr(asyncio, "sleep", sleep)
    dead = await Delivery(producer, as_dead_letter).deliver([Output("dlq", b"k", b"x" * 500)])
    assert dead == set() and producer.written == [("dlq", b"x" * 500)] and sleeps == [0.5]
