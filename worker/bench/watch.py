"""Reads a run's topics back from the broker: which payments have an outcome, Betalt →
receipt latency by the records' broker timestamps, and when the enrich stage wrote its
first and last output (its throughput, measured inside the worker's own clock domain
without scraping it); and a worker's CPU sampled beside it, to take between two of those
times."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from typing import TYPE_CHECKING

from worker.config import Topics
from worker.engine.kafka import KafkaReader
from worker.engine.records import TopicPartition

if TYPE_CHECKING:
    from worker.bench.worker_proc import WorkerProcess

Key = tuple[str, str]


class Watch:
    def __init__(self, bootstrap: str, topics: Topics, partitions: int) -> None:
        self.topics = topics
        self.partitions = partitions
        self.reader = KafkaReader(bootstrap)
        self.betalt_ms: dict[Key, int] = {}
        self.last_event_ms: int | None = None  # the last payment-status event's broker time
        self.receipt_ms: dict[Key, int] = {}
        self.rejected: set[Key] = set()
        self.rejected_ms: dict[Key, int] = {}
        self.dead_letters = 0
        self.enrich_first_ms: int | None = None  # first submission or rejection written
        self.enrich_last_ms: int | None = None
        self.enrich_ms: list[int] = []  # every enrich output's broker time (the report's)
        self.payments_per_partition: Counter[int] = Counter()  # events, by input partition

    async def start(self) -> None:
        await self.reader.start()
        t = self.topics
        tps = [
            TopicPartition(topic, p)
            for topic in (t.payments, t.submissions, t.receipts, t.rejections, t.dlq)
            for p in range(self.partitions)
        ]
        self.reader.assign(tps)
        for tp, first in (await self.reader.beginning_offsets(tps)).items():
            self.reader.seek(tp, first)

    async def stop(self) -> None:
        await self.reader.stop()

    async def until_done(self, expected: set[Key], timeout_s: float) -> None:
        """Read until every expected payment is posted or rejected."""
        deadline = time.monotonic() + timeout_s
        # Kept as the outcomes come, not computed again per poll: over 50,000 payments
        # the set differences were a sixth of the bench process's CPU, on the cores the
        # worker is measured on.
        left = expected - self.receipt_ms.keys() - self.rejected
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(left)} of {len(expected)} payments without an outcome after "
                    f"{timeout_s:.0f} s ({self.dead_letters} dead letters)"
                )
            left.difference_update(await self.poll())

    async def poll(self) -> list[Key]:
        """Read what is there; the payments that got an outcome (receipt or rejection)."""
        answered: list[Key] = []
        t = self.topics
        batches = await self.reader.poll(0.2)
        for tp, records in batches.items():
            for r in records:
                if tp.topic == t.payments:
                    self.payments_per_partition[tp.partition] += 1
                    if self.last_event_ms is None or r.timestamp_ms > self.last_event_ms:
                        self.last_event_ms = r.timestamp_ms
                    body = json.loads(r.value or b"{}")
                    if body.get("status") == "Betalt":
                        self.betalt_ms.setdefault(
                            (body["tenant_id"], body["payment_id"]), r.timestamp_ms
                        )
                    continue
                if tp.topic in (t.submissions, t.rejections):
                    self._enrich_output(r.timestamp_ms)
                if tp.topic == t.dlq:
                    self.dead_letters += 1
                    continue
                if tp.topic == t.submissions:
                    continue
                body = json.loads(r.value or b"{}")
                key = (body["tenant_id"], body["payment_id"])
                answered.append(key)
                if tp.topic == t.receipts:
                    self.receipt_ms.setdefault(key, r.timestamp_ms)
                else:
                    self.rejected.add(key)
                    self.rejected_ms.setdefault(key, r.timestamp_ms)
        await asyncio.sleep(0)
        return answered

    def _enrich_output(self, ms: int) -> None:
        self.enrich_ms.append(ms)
        if self.enrich_first_ms is None or ms < self.enrich_first_ms:
            self.enrich_first_ms = ms
        if self.enrich_last_ms is None or ms > self.enrich_last_ms:
            self.enrich_last_ms = ms

    def latencies_ms(self, keys: set[Key]) -> list[int]:
        """Betalt event → first receipt, for the given payments that were posted."""
        return sorted(
            self.receipt_ms[k] - self.betalt_ms[k]
            for k in keys
            if k in self.receipt_ms and k in self.betalt_ms
        )


async def topic_times(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """The broker times of every record now on `topic`, sorted (the anchor's outputs)."""
    reader = KafkaReader(bootstrap)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        for tp, first in (await reader.beginning_offsets(tps)).items():
            reader.seek(tp, first)
        out: list[int] = []
        deadline = time.monotonic() + 60
        while [tp for tp, end in ends.items() if await reader.position(tp) < end]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end in 60 s")
            for records in (await reader.poll(0.2)).values():
                out += [r.timestamp_ms for r in records]
        return sorted(out)
    finally:
        await reader.stop()


def per_second(times_ms: list[int], bin_s: float) -> list[float]:
    """Events per second in bins of `bin_s`, from the first time on."""
    if not times_ms:
        return []
    first = min(times_ms)
    counts = Counter(int((t - first) / 1000 / bin_s) for t in times_ms)
    return [round(counts.get(i, 0) / bin_s, 1) for i in range(max(counts) + 1)]


def to_last_outcome_s(watch: Watch, keys: set[Key]) -> float | None:
    """From the first of these payments' Betalt events to the last of their outcomes
    (receipt or rejection), by broker times."""
    starts = [watch.betalt_ms[k] for k in keys if k in watch.betalt_ms]
    ends = [t for k in keys for t in (watch.receipt_ms.get(k), watch.rejected_ms.get(k)) if t]
    if not starts or not ends:
        return None
    return round((max(ends) - min(starts)) / 1000, 2)


def after_last_event_s(watch: Watch, keys: set[Key]) -> float | None:
    """From the last payment-status event (of the whole run: every event was published by
    then) to the last of these payments' outcomes, by broker times: how long the worker
    still worked once the events stopped coming (issue 29's target)."""
    ends = [t for k in keys for t in (watch.receipt_ms.get(k), watch.rejected_ms.get(k)) if t]
    if watch.last_event_ms is None or not ends:
        return None
    return round((max(ends) - watch.last_event_ms) / 1000, 2)


def quantile(xs: list[int], q: float) -> int | None:
    """The q-quantile of sorted xs (nearest rank), None for no data."""
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(q * len(xs)))]


CLOCK_TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # what /proc/<pid>/stat counts CPU in


async def sample_cpu(worker: WorkerProcess, samples: list[tuple[float, float]]) -> None:
    """The worker's CPU seconds every 10 ms, with the wall clock its outputs are stamped by."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        while True:
            samples.append((time.time() * 1000, worker.cpu_s()))
            await asyncio.sleep(0.01)


def cpu_between(samples: list[tuple[float, float]], first_ms: float, last_ms: float) -> float:
    """The worker's CPU seconds over a window that holds [first_ms, last_ms]: from the last
    sample at or before the first to the first sample at or after the last (never less
    than the work between them; at most a sample interval more on each side). The kernel
    counts CPU in clock ticks: a worker that wrote its outputs within one tick of CPU
    reads 0, and one tick is then what it is taken to have used (a tiny run divided by
    it)."""
    if not samples:
        return 0.0
    start = samples[0][1]
    end = samples[-1][1]
    for when, cpu in samples:
        if when <= first_ms:
            start = cpu
        if when >= last_ms:
            end = cpu
            break
    return max(end - start, CLOCK_TICK_S)
