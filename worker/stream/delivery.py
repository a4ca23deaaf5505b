"""The one commit rule of the stream: a batch's inputs are acknowledged only after the
broker holds every one of its outputs.

`Delivery.deliver` writes a batch's outputs and returns only when the broker has taken
them all; callers acknowledge inputs (and write table state) after it returns. A failed
write is retried with backoff: what had been written may be written again, which the
next stage tolerates (duplicates are recognised, and posting looks up before it posts).

Some writes no retry can cure: an output larger than the broker takes (an event with a
huge text makes a submission twice its size). Such an output is replaced by the
dead letter of the input it came from (`Output.source`), and the batch goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from worker import logs

log = logs.get("worker.stream")


@dataclass(frozen=True, slots=True)
class Output:
    """One record to write: a stage's outputs are written together before acking inputs."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    # The input message this output is derived from: dead-lettered if the output cannot
    # ever be written. None for outputs that are themselves dead letters.
    source: Any = None

    def size(self) -> int:
        return (
            len(self.key or b"")
            + len(self.value or b"")
            + sum(len(k) + len(v) for k, v in self.headers or ())
        )


# The broker (or the producer, before sending) will never take these records.
UNWRITABLE: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidMessageError,
)


class Producer(Protocol):
    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None
    ) -> asyncio.Future[Any]: ...


Deliver = Callable[[list[Output]], Awaitable[set[int]]]
# Builds the dead letter for an output's source, given why the output was refused.
Unwritable = Callable[[Output, BaseException], Output]
# For a record with no source (a dead letter itself) too large to write: a smaller one
# that says what was cut, or None to keep retrying.
Shrink = Callable[[Output, BaseException], Output | None]


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


class Delivery:
    def __init__(
        self,
        producer: Producer,
        unwritable: Unwritable | None = None,
        shrink: Shrink | None = None,
    ) -> None:
        self.producer = producer
        self.unwritable = unwritable
        self.shrink = shrink

    async def deliver(self, outputs: list[Output]) -> set[int]:
        """Write every output, however long the broker takes to take them.

        Returns the `id()` of each source whose output could never be written and was
        dead-lettered instead: callers record no other state for those inputs.
        """
        dead: set[int] = set()
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
            retry: list[Output] = []
            replaced: list[Output] = []
            errors: list[BaseException] = []
            for out, r in zip(outputs, done, strict=True):
                if not isinstance(r, BaseException):
                    continue
                if isinstance(r, UNWRITABLE) and out.source is not None and self.unwritable:
                    log.error(
                        "output_unwritable",
                        topic=out.topic,
                        bytes=out.size(),
                        error=type(r).__name__,
                        action="its input is dead-lettered instead",
                    )
                    dead.add(id(out.source))
                    replaced.append(self.unwritable(out, r))
                elif isinstance(r, UNWRITABLE) and out.source is None and self.shrink:
                    smaller = self.shrink(out, r)
                    if smaller is not None:
                        log.error("output_shrunk", topic=out.topic, bytes=out.size())
                        replaced.append(smaller)
                    else:
                        retry.append(out)
                        errors.append(r)
                else:
                    retry.append(out)
                    errors.append(r)
            outputs = replaced + retry
            if not retry:
                continue  # the replacements (if any) are written at once
            attempt += 1
            delay = min(30.0, 0.5 * 2 ** (attempt - 1))
            if any(isinstance(e, UNWRITABLE) for e in errors):
                # No input to dead-letter it as (a dead letter itself): a person must look.
                log.critical("output_unwritable_without_source", topic=retry[0].topic)
            log.error(
                "output_write_failed",
                outputs=len(retry),
                attempt=attempt,
                retry_in_s=delay,
                error=repr(errors[0]),
            )
            await asyncio.sleep(delay)
        return dead
