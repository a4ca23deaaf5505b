"""A plan's worker runs on the bench's world (`world.Bench`): the enrich stage alone over a
burst (like for like with the anchor), and whole workers in one group, fed at once or at a
rate, until every Betalt payment has an outcome. Each worker is stopped by `finally`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from worker.bench import data
from worker.bench.diagnostics import PySpy, held_by
from worker.bench.watch import (
    Watch,
    after_last_event_s,
    cpu_between,
    quantile,
    sample_cpu,
    to_last_outcome_s,
    topic_times,
)
from worker.bench.worker_proc import WorkerProcess
from worker.bench.world import PARTITIONS, Bench
from worker.devenv.feed import event_records, publish
from worker.devenv.feed import producer as feed_producer
from worker.engine.lag import group_positions
from worker.engine.topics import ensure_topics
from worker.pipeline.topics import topic_specs


@dataclass
class Run:
    """One whole-worker run: its figures (JSON-ready), and what the report draws."""

    figures: dict[str, Any]
    latencies_ms: list[int] = field(default_factory=list)  # Betalt → receipt, sorted
    enrich_ms: list[int] = field(default_factory=list)  # broker times of enrich outputs
    receipt_ms: list[int] = field(default_factory=list)  # broker times of receipts
    diagnostics: dict[str, Any] = field(default_factory=dict)  # py-spy's, tracemalloc's


async def enrich_run(bench: Bench, tag: str, events: list[dict[str, Any]]) -> Run:
    """A worker running the enrich stage alone over the burst, like for like with the
    anchor: the events are on the broker before the worker starts, and nothing else in
    the bench runs meanwhile (no publisher, no reader sharing the cores). Its rate and
    CPU per event are taken between its first and last output (broker times; its CPU
    sampled every 10 ms, over a window that holds them), over the outputs after the
    first: the work of a worker that is running, not its start (registers, group join)."""
    s = await bench.settings(tag)
    await ensure_topics(bench.bootstrap, topic_specs(s))
    await bench.fresh_sandbox()
    await publish(bench.bootstrap, s.topics.payments, event_records(events), False)
    worker = bench.worker(s, tag, {"FLYT_STAGES": "enrich"})
    samples: list[tuple[float, float]] = []  # (epoch ms, CPU s)
    worker.start()
    bench.announce(worker, tag)
    sampling = asyncio.create_task(sample_cpu(worker, samples))
    try:
        deadline = time.monotonic() + 180 + len(events) / 100
        while not await _all_committed(bench.bootstrap, s.app_id, s.topics.payments):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the enrich stage did not finish {len(events)} events")
            if worker.exited():
                raise RuntimeError(f"the worker exited: {worker.tail()}")
            await asyncio.sleep(0.1)
    except BaseException:
        bench.say(f"worker log ({tag}): {worker.tail(10)}")
        raise
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        worker.stop()
    outputs = sorted(  # its submissions' and rejections' broker times
        await topic_times(bench.bootstrap, s.topics.submissions, s.partitions)
        + await topic_times(bench.bootstrap, s.topics.rejections, s.partitions)
    )
    if len(outputs) < 2 or outputs[-1] <= outputs[0]:
        raise RuntimeError("the enrich stage wrote no outputs to time")
    first, last = outputs[0], outputs[-1]
    after_first = sum(1 for ms in outputs if ms > first)
    cpu = cpu_between(samples, first, last)
    figures = {
        "events": len(events),
        "events_per_s": round(after_first / ((last - first) / 1000)),
        "cpu_us_per_event": round(cpu / after_first * 1e6),
    }
    return Run(figures, enrich_ms=outputs)


async def worker_run(
    bench: Bench,
    tag: str,
    events: list[dict[str, Any]],
    rate: float | None,
    window_s: float,
    workers: int = 1,
    partitions: int = PARTITIONS,
    profile: bool = False,
    incomplete_ok: bool = False,
) -> Run:
    """`workers` whole workers in one group (both stages, posting to the sandbox): the
    events published at once (`rate` None) or at `rate` per second, until every Betalt
    payment has an outcome. `profile`: py-spy samples them from ready to done, if the
    diagnostics ask for it; with `diagnostics.tracemalloc` they run traced.
    `incomplete_ok`: a run still without every outcome at its deadline is measured as
    it stands (`incomplete` says how many are missing) instead of failing the bench."""
    s = await bench.settings(tag, partitions)
    await ensure_topics(bench.bootstrap, topic_specs(s))
    await bench.fresh_sandbox()
    env = {"FLYT_POST_BATCH_WINDOW_S": str(window_s)}
    traced = bench.diagnostics.tracemalloc
    names = [f"{tag}-{i}" for i in range(workers)]
    procs = [bench.worker(s, name, env, traced) for name in names]
    watch = Watch(bench.bootstrap, s.topics, s.partitions)
    expected = data.betalt_keys(events)
    spies: list[PySpy] = []
    incomplete: str | None = None
    try:
        for w, name in zip(procs, names, strict=True):
            w.start()
            bench.announce(w, name)
        for w in procs:
            await w.ready()
        if profile and bench.diagnostics.py_spy:  # from ready on: the run, not the start
            for w, name in zip(procs, names, strict=True):
                spies.append(PySpy(w.pid, bench.logs / f"py-spy-{name}.txt"))
        if workers > 1:
            await _balanced(procs, s.topics.payments, s.partitions)
        await watch.start()
        stats = bench.sandbox.stats
        before = (stats.requests, stats.queries, stats.mutations, stats.burst_errors_sent)
        cpu_before = [w.cpu_s() for w in procs]
        records = event_records(events)
        feed = asyncio.create_task(_feed(bench.bootstrap, s.topics.payments, records, rate))
        try:
            timeout = 120 + (len(events) / rate if rate else len(events) / 100)
            try:
                await watch.until_done(expected, timeout)
            except TimeoutError as exc:
                if not incomplete_ok:
                    raise
                incomplete = str(exc)
                bench.say(f"{tag}: {incomplete}; measured as it stands")
            await feed
        finally:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
        requests, lookups, mutations, burst_errors = (
            after - b
            for after, b in zip(
                (stats.requests, stats.queries, stats.mutations, stats.burst_errors_sent),
                before,
                strict=True,
            )
        )
        cpu = [w.cpu_s() - c for w, c in zip(procs, cpu_before, strict=True)]
        rss = [w.peak_rss_mb() for w in procs]
        shares = [_assigned(w, s.topics.payments) for w in procs]
    except BaseException:
        for w in procs:
            bench.say(f"worker log ({tag}): {w.tail(10)}")
        raise
    finally:
        for spy in spies:  # before the worker stops: its samples are the run's
            spy.stop()
        for w in procs:
            w.stop()
        await watch.stop()
    diagnostics: dict[str, Any] = {}
    if spies:
        diagnostics["py_spy"] = spies[0].top() if workers == 1 else [x.top() for x in spies]
    if traced:
        diagnostics["tracemalloc"] = [
            held_by(bench.tracemalloc_path(name))
            if bench.tracemalloc_path(name).exists()
            else {"error": "no snapshot written"}
            for name in names
        ]
    lat = watch.latencies_ms(expected)
    posted = len(expected & watch.receipt_ms.keys())
    first, last = watch.enrich_first_ms, watch.enrich_last_ms
    enrich = len(events) / ((last - first) / 1000) if first and last and last > first else None
    figures: dict[str, Any] = {
        "events": len(events),
        "posted": posted,
        "rejected": len(expected & watch.rejected),
        "p50_ms": quantile(lat, 0.50),
        "p99_ms": quantile(lat, 0.99),
        "max_ms": lat[-1] if lat else None,
        "to_last_outcome_s": to_last_outcome_s(watch, expected),
        "last_outcome_after_last_event_s": after_last_event_s(watch, expected),
        "requests": requests,
        "lookups": lookups,  # queries: what the post side looked up before posting
        "mutations": mutations,
        "burst_errors": burst_errors,  # the sandbox's per-token burst limit hit
        "requests_per_payment": round(requests / posted, 4) if posted else None,
        "enrich_events_per_s": round(enrich) if enrich else None,
        "worker_cpu_us_per_event": round(sum(cpu) / len(events) * 1e6),
        "worker_rss_mb": max(rss),
    }
    if incomplete is not None:
        figures["incomplete"] = incomplete
    if workers > 1:
        per_partition = watch.payments_per_partition
        figures["per_worker"] = [
            {
                "partitions": sorted(share),
                "events": sum(per_partition[p] for p in share),
                "cpu_s": round(c, 2),
                "cpu_us_per_event": (
                    round(c / n * 1e6) if (n := sum(per_partition[p] for p in share)) else None
                ),
                "rss_mb": r,
            }
            for share, c, r in zip(shares, cpu, rss, strict=True)
        ]
    return Run(
        figures,
        latencies_ms=lat,
        enrich_ms=sorted(watch.enrich_ms),
        receipt_ms=sorted(watch.receipt_ms[k] for k in expected if k in watch.receipt_ms),
        diagnostics=diagnostics,
    )


def _assigned(worker: WorkerProcess, topic: str) -> set[int]:
    """The partitions of `topic` the worker's engine last said it holds (its log)."""
    held: set[int] = set()
    for line in worker.log_path.read_text("utf-8", "replace").splitlines():
        if '"partitions_assigned"' not in line:
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            held = {
                int(tp.rsplit(":", 1)[1])
                for tp in entry.get("partitions", [])
                if tp.rsplit(":", 1)[0] == topic
            }
    return held


async def _balanced(procs: list[WorkerProcess], topic: str, partitions: int) -> None:
    """Until the group has settled: every partition of `topic` held by exactly one worker
    (each says so in its log once its assignment is prepared)."""
    deadline = time.monotonic() + 120
    while True:
        shares = [_assigned(w, topic) for w in procs]
        held = [p for share in shares for p in share]
        if sorted(held) == list(range(partitions)) and all(shares):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the group did not settle on {topic}: {shares}")
        await asyncio.sleep(0.2)


async def _all_committed(bootstrap: str, group: str, topic: str) -> bool:
    positions = await group_positions(bootstrap, group, [topic])
    return bool(positions) and all((p.committed or 0) >= p.end for p in positions if p.end)


async def _feed(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]], rate: float | None
) -> None:
    """All at once, or `rate` records per second in tenths of a second, on a fixed clock
    (a late tick sends more, so the average rate holds)."""
    if not rate:
        await publish(bootstrap, topic, records, one_record_batches=False)
        return
    producer = feed_producer(bootstrap, one_record_batches=False)
    await producer.start()
    try:
        futures = []
        start = time.monotonic()
        sent = 0
        while sent < len(records):
            due = min(len(records), int((time.monotonic() - start) * rate) + 1)
            for key, value in records[sent:due]:
                futures.append(await producer.send(topic, key, value))
            sent = max(sent, due)
            await asyncio.sleep(0.1 - (time.monotonic() - start) % 0.1)
        for f in futures:
            await f
    finally:
        await producer.stop()
