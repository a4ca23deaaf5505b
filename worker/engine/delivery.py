"""Writing a batch's outputs: `deliver` returns only when the broker holds every one.

A failed write is retried with backoff, for as long as it takes: what had been written
may be written again, which the next stage tolerates (duplicates are recognised, and
posting looks up before it posts). Only an engine that is stopping gives up
(`DeliveryAbandoned`), leaving the inputs undone, to be read again after a restart.

Some writes no retry can cure: an output larger than the broker takes (an event with a
huge text makes a submission twice its size). Such an output is replaced by the dead
letter of the input it came from (`Output.source`), and the batch goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from worker import logs
from worker.engine.backend import Producer
from worker.engine.records import Output

log = logs.get("worker.engine")


class DeliveryAbandoned(Exception):
    """The engine is stopping: the outputs were not all written, their inputs stay undone."""


# Builds the dead letter for an output's source, given why the output was refused.
Unwritable = Callable[[Output, BaseException], Output]
# For a record with no source (a dead letter itself) too large to write: a smaller one
# that says what was cut, or None to keep retrying.
Shrink = Callable[[Output, BaseException], Output | None]
Sleep = Callable[[float], Awaitable[None]]


class Delivery:
    def __init__(
        self,
        producer: Producer,
        unwritable: Unwritable | None = None,
        shrink: Shrink | None = None,
        stopping: Callable[[], bool] = lambda: False,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.producer = producer
        self.unwritable = unwritable
        self.shrink = shrink
        self.stopping = stopping
        self.sleep = sleep

    async def deliver(self, outputs: list[Output]) -> set[int]:
        """Write every output, however long the broker takes to take them.

        Returns the `id()` of each source whose output could never be written and was
        dead-lettered instead: callers record no other state for those inputs. Raises
        `DeliveryAbandoned` when the engine stops before everything is written.
        """
        dead: set[int] = set()
        attempt = 0
        while outputs:
            done = await self.producer.send_many(outputs)
            retry: list[Output] = []
            replaced: list[Output] = []
            errors: list[BaseException] = []
            unwritable = self.producer.unwritable
            for out, r in zip(outputs, done, strict=True):
                if r is None:
                    continue
                if isinstance(r, unwritable) and out.source is not None and self.unwritable:
                    log.error(
                        "output_unwritable",
                        topic=out.topic,
                        bytes=out.size(),
                        action="its input is dead-lettered instead",
                    )
                    dead.add(id(out.source))
                    replaced.append(self.unwritable(out, r))
                elif isinstance(r, unwritable) and out.source is None and self.shrink:
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
            if self.stopping():
                raise DeliveryAbandoned(f"{len(retry)} output(s) not written: {errors[0]!r}")
            attempt += 1
            delay = min(30.0, 0.5 * 2 ** (attempt - 1))
            if any(isinstance(e, unwritable) for e in errors):
                # No input to dead-letter it as (a dead letter itself): a person must look.
                log.critical("output_unwritable_without_source", topic=retry[0].topic)
            log.error(
                "output_write_failed",
                outputs=len(retry),
                attempt=attempt,
                retry_in_s=delay,
                error=repr(errors[0]),
            )
            await self.sleep(delay)
        return dead
