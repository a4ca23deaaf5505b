"""The one commit rule of the stream: a batch's inputs are acknowledged only after the
broker holds every one of its outputs.

`Delivery.deliver` writes a batch's outputs and returns only when the broker has taken
them all; callers acknowledge inputs (and write table state) after it returns. A failed
write is retried with backoff: what had been written may be written again, which the
next stage tolerates (duplicates are recognised, and posting looks up before it posts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from worker import logs

log = logs.get("worker.stream")


@dataclass(frozen=True, slots=True)
class Output:
    """One record to write: a stage's outputs are written together before acking inputs."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


class Producer(Protocol):
    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None
    ) -> asyncio.Future[Any]: ...


Deliver = Callable[[list[Output]], Awaitable[None]]


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


class Delivery:
    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    async def deliver(self, outputs: list[Output]) -> None:
        """Write every output, however long the broker takes to take them."""
        attempt = 0
        while outputs:
            results: list[Any] = []
            for out in outputs:
                try:
                    results.append(
                        await self.producer.send(
                            out.topic, key=out.key, value=out.value, headers=out.headers
                        )
                    )
                except Exception as exc:  # e.g. no metadata: the broker is unreachable
                    results.append(_failed(exc))
            done = await asyncio.gather(*results, return_exceptions=True)
            failed = [o for o, r in zip(outputs, done, strict=True) if isinstance(r, BaseException)]
            if not failed:
                return
            attempt += 1
            delay = min(30.0, 0.5 * 2 ** (attempt - 1))
            error = next(r for r in done if isinstance(r, BaseException))
            log.error(
                "output_write_failed",
                outputs=len(failed),
                attempt=attempt,
                retry_in_s=delay,
                error=repr(error),
            )
            await asyncio.sleep(delay)
            outputs = failed
