"""While the events flow: the feed at a steady pace, the kills beside it (`faults.py`), the
workers' supervisor, and the group's commits sampled into the campaign's log."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from worker.config import Settings
from worker.demo.chaos.faults import Faults
from worker.demo.chaos.options import ChaosOptions
from worker.demo.chaos.transcript import note, say
from worker.demo.chaos.workers import Workers
from worker.devenv.feed import producer
from worker.engine.kafka import BrokerError
from worker.engine.lag import group_positions


@dataclass
class Flow:
    """What runs while the events flow: the feed, the kills, the supervisor, the samples."""

    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    fed: int = 0
    feed_done: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False  # kills still to come

    def raise_failure(self) -> None:
        """A feed or kill that failed must not pass unseen."""
        for t in self.tasks:
            if t.done() and not t.cancelled() and (exc := t.exception()) is not None:
                raise exc

    async def cancel(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t


async def feed(
    o: ChaosOptions, flow: Flow, bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]
) -> None:
    """About `rate` records a second, in tenths of a second; a batch the broker did not
    take (a broker down) is sent again (a Betalt event twice is a duplicate, R17)."""
    step = max(1, round(o.rate / 10))
    p = producer(bootstrap, one_record_batches=o.broker == "tansu")
    await p.start()
    try:
        for start in range(0, len(records), step):
            t = time.monotonic()
            batch = records[start : start + step]
            while True:
                try:
                    futures = [await p.send(topic, k, v) for k, v in batch]
                    for f in futures:
                        await f
                    break
                except BrokerError as exc:
                    say(f"feed: the broker did not take a batch ({exc!r}); sending it again")
                    await asyncio.sleep(1.0)
            flow.fed += len(batch)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
    finally:
        await p.stop()
        flow.feed_done.set()


async def track_commits(s: Settings) -> None:
    """The group's committed offsets, sampled every 2 s, into the campaign's log when
    they change: after a loss they show which commit passed what was never posted."""
    assert s.bootstrap
    t = s.topics
    last = ""
    while True:
        with contextlib.suppress(Exception):  # a broker away: the next sample
            positions = await asyncio.wait_for(
                group_positions(s.bootstrap, s.app_id, [t.payments, t.submissions]), 5
            )
            line = " ".join(f"{p.topic}:{p.partition}={p.committed}/{p.end}" for p in positions)
            if line != last:
                note(f"committed/end {line}")
                last = line
        await asyncio.sleep(2)


async def committed_all(s: Settings) -> bool:
    """The worker group has committed every payment and submission record."""
    assert s.bootstrap
    try:
        positions = await group_positions(
            s.bootstrap, s.app_id, [s.topics.payments, s.topics.submissions]
        )
    except Exception:  # a broker coming back: not yet
        return False
    return bool(positions) and all(p.lag <= 0 for p in positions)


def start_flow(
    flow: Flow,
    o: ChaosOptions,
    s: Settings,
    workers: Workers,
    faults: Faults,
    records: list[tuple[bytes, bytes]],
    cluster: Any,
    pool: concurrent.futures.Executor,
) -> None:
    """The feed, the kills beside it, the supervisor and the commit samples, as tasks of
    `flow`."""
    assert s.bootstrap
    feed_s = len(records) / o.rate
    say(
        f"feeding {o.events} events and {o.n_bad} unreadable lines at {o.rate:g}/s "
        f"(~{feed_s:.0f} s); {o.kills} worker kill(s), {o.broker_kills} broker kill(s)"
    )
    t0 = time.monotonic()
    flow.tasks.append(asyncio.create_task(feed(o, flow, s.bootstrap, s.topics.payments, records)))
    chaos = [asyncio.create_task(faults.kill_workers(t0, feed_s))]
    if o.broker_kills:
        chaos.append(asyncio.create_task(faults.kill_brokers(t0, feed_s, cluster, pool)))
    flow.tasks += chaos
    flow.tasks.append(asyncio.create_task(workers.supervise()))
    flow.tasks.append(asyncio.create_task(track_commits(s)))
    flow.busy = True

    async def chaos_over() -> None:
        await asyncio.gather(*chaos)
        flow.busy = False

    flow.tasks.append(asyncio.create_task(chaos_over()))
