"""`python -m worker bench`: one broker, one run, every figure of issue 13.

Phases, in order, each on topics of its own (the registers topic is shared):
1. the pure core and the register book (no broker);
2. the anchor: plain aiokafka over the burst's events (`worker/engine/anchor.py`);
3. the enrich stage alone (a worker with FLYT_STAGES=enrich) over the same 10,000
   events: its rate and CPU per event, like for like with the anchor (`ratio`,
   `cpu_ratio`);
4. a burst: the whole worker (a child process) is ready, then the 10,000 events over 20
   tenants are published at once: Betalt → receipt, requests per payment, the worker's
   CPU per event (posting included) and peak memory with 356 tenants' registers loaded;
5. a steady 500 events/s over 3 tenants, once per post batch window: Betalt → receipt
   and requests per payment (the window's trade-off); the default window's run gives
   `e2e_p50_ms`/`e2e_p99_ms`.
The Xledger sandbox answers every request about 50 ms late. Every broker, sandbox and
worker started here is stopped however the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.bench import data
from worker.bench.core import core_figures
from worker.bench.watch import Watch, quantile
from worker.bench.worker_proc import WorkerProcess
from worker.config import Settings, Topics
from worker.contracts import RegisterSnapshot
from worker.core.register_book import RegisterBook
from worker.devenv.feed import event_records, publish
from worker.devenv.feed import producer as feed_producer
from worker.devenv.sandbox import FaultProfile, XledgerSandbox, entity_from_snapshot
from worker.engine import broker_kind
from worker.engine.anchor import passthrough
from worker.engine.lag import group_positions
from worker.engine.topics import TopicSpec, ensure_topics
from worker.pipeline.topics import topic_specs
from worker.xledger.secrets import env_name

DEFAULT_WINDOW_S = Settings().post_batch_window_s
PARTITIONS = Settings().partitions


@dataclass(frozen=True)
class Plan:
    burst_events: int = 10_000
    burst_tenants: int = 20
    rate: float = 500.0
    steady_tenants: int = 3
    steady_s: float = 30.0
    windows: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    sandbox_latency_s: float = 0.05
    core_events: int = 100_000
    registered_tenants: int = data.MUNICIPALITIES


FULL = Plan()
QUICK = Plan(steady_s=12.0, windows=(0.25, 1.0), core_events=20_000)
TINY = Plan(  # the test's: every key, in seconds, figures meaningless
    burst_events=300,
    burst_tenants=4,
    rate=100.0,
    steady_s=2.0,
    windows=(DEFAULT_WINDOW_S,),
    core_events=500,
    registered_tenants=6,
)


Say = Callable[[str], None]


def _say_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(plan: Plan, broker: str, say: Say = _say_stderr) -> dict[str, Any]:
    """Start the broker (from this thread: its processes die with it), run every phase,
    stop everything; returns the summary."""
    load_start = _load()
    started = time.monotonic()
    with _interrupts_as_keyboard(), _broker(broker, say) as bootstrap:
        summary = asyncio.run(_phases(plan, bootstrap, say))
    summary = {"broker": broker, **summary}
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    summary["loadavg_start"] = load_start
    summary["loadavg_end"] = _load()
    return summary


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextlib.contextmanager
def _interrupts_as_keyboard() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the clean-up below stops what was started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _broker(kind: str, say: Say) -> Iterator[str]:
    if kind == "tansu":
        from worker.devenv.tansu import EmbeddedBroker

        with EmbeddedBroker() as tansu:
            say(f"broker: Tansu at {tansu.bootstrap}")
            yield tansu.bootstrap
    else:
        from worker.devenv.kafka_cluster import KafkaCluster, kafka_version

        with KafkaCluster(brokers=1) as cluster:
            say(f"broker: Apache Kafka {kafka_version()} (1 broker) at {cluster.bootstrap}")
            yield cluster.bootstrap


async def _phases(plan: Plan, bootstrap: str, say: Say) -> dict[str, Any]:
    out: dict[str, Any] = {}
    core = core_figures(plan.core_events)
    out["core_us_per_event"] = core["core_us_per_event"]
    out["parse_us_per_event"] = core["parse_us_per_event"]
    say(f"core: {core}")
    out.update(_snapshot_figures(plan.registered_tenants))
    say(f"snapshots: {plan.registered_tenants} tenants, {out['snapshot_mb']} MB as JSON")

    all_tenants = data.tenant_ids(plan.registered_tenants)
    burst_tenants = data.tenant_ids(plan.burst_tenants)
    steady_tenants = data.tenant_ids(plan.steady_tenants)
    burst = data.events_for(burst_tenants, plan.burst_events, seed=101)
    scratch = Path(tempfile.mkdtemp(prefix="flyt-bench-"))
    sandbox = XledgerSandbox(
        faults=FaultProfile(slow=1.0, slow_seconds=plan.sandbox_latency_s),
        burst_limit=20,
    )
    tokens: dict[str, str] = {}
    try:
        for i, tenant in enumerate(all_tenants):
            snap = RegisterSnapshot.model_validate(data.snapshot_dict(tenant))
            token = secrets.token_urlsafe(24)
            sandbox.add_entity(token, entity_from_snapshot(snap, owner_db_id=50_000_000 + i))
            tokens[env_name(tenant)] = token
        await sandbox.start()
        bench = _Bench(bootstrap, sandbox, tokens, scratch, say)
        await bench.publish_registers(all_tenants)

        records = event_records(burst)
        pt, pt_cpu = await bench.passthrough(records)
        out["passthrough_events_per_s"] = round(pt)
        out["passthrough_cpu_us_per_event"] = round(pt_cpu)
        say(f"passthrough: {pt:.0f} events/s, {pt_cpu:.0f} µs CPU per event")

        # Like for like with the anchor: the enrich stage alone (a worker running only it,
        # FLYT_STAGES=enrich) over the same events: consume, read, evaluate, produce.
        e = await bench.enrich_run("enrich", burst)
        out["enrich_events_per_s"] = e["events_per_s"]
        out["enrich_cpu_us_per_event"] = e["cpu_us_per_event"]
        out["ratio"] = round(e["events_per_s"] / pt, 3) if pt else None
        out["cpu_ratio"] = round(pt_cpu / e["cpu_us_per_event"], 3)
        say(f"enrich stage alone: {e}")

        # The whole worker (both stages, posting to the sandbox) over the same burst.
        b = await bench.worker_run("burst", burst, rate=None, window_s=DEFAULT_WINDOW_S)
        out["worker_enrich_events_per_s"] = b["enrich_events_per_s"]
        out["burst_p50_ms"] = b["p50_ms"]
        out["burst_p99_ms"] = b["p99_ms"]
        out["xledger_requests_per_payment_burst"] = b["requests_per_payment"]
        out["worker_rss_mb"] = b["worker_rss_mb"]
        out["worker_cpu_us_per_event"] = b["worker_cpu_us_per_event"]
        say(f"burst: {b}")

        windows = sorted({*plan.windows, DEFAULT_WINDOW_S})
        table = []
        for i, window in enumerate(windows):
            events = data.events_for(steady_tenants, int(plan.rate * plan.steady_s), seed=201 + i)
            r = await bench.worker_run(f"steady-w{window}", events, plan.rate, window)
            say(f"steady {plan.rate:.0f}/s, window {window} s: {r}")
            table.append(
                {
                    "window_s": window,
                    "requests_per_payment": r["requests_per_payment"],
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "loadavg_1m": _load()[0],
                }
            )
            if window == DEFAULT_WINDOW_S:
                out["e2e_p50_ms"] = r["p50_ms"]
                out["e2e_p99_ms"] = r["p99_ms"]
                out["xledger_requests_per_payment_steady"] = r["requests_per_payment"]
        out["xledger_requests_per_payment"] = {
            "burst": out["xledger_requests_per_payment_burst"],
            "steady": out["xledger_requests_per_payment_steady"],
        }
        out["window_tradeoff"] = table
        out["setup"] = {
            "burst_events": plan.burst_events,
            "burst_tenants": plan.burst_tenants,
            "steady_rate": plan.rate,
            "steady_s": plan.steady_s,
            "steady_tenants": plan.steady_tenants,
            "sandbox_latency_ms": round(plan.sandbox_latency_s * 1000),
            "registered_tenants": plan.registered_tenants,
            "partitions": PARTITIONS,
        }
    finally:
        await sandbox.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def _snapshot_figures(n: int) -> dict[str, Any]:
    """n tenants' snapshots: their size as JSON, and the register book's memory for them."""
    raw = [data.snapshot_bytes(t) for t in data.tenant_ids(n)]
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        book = RegisterBook()
        for r in raw:
            if not book.offer(RegisterSnapshot.model_validate_json(r)).accepted:
                raise RuntimeError("a bench snapshot was refused")  # data.py is wrong
        load_s = time.perf_counter() - t0
        book_bytes, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "snapshot_mb": round(sum(map(len, raw)) / 1e6, 2),
        "register_book_mb": round(book_bytes / 1e6, 1),
        "snapshot_load_ms_per_tenant": round(load_s / n * 1000, 2),  # under tracemalloc
    }


class _Bench:
    def __init__(
        self,
        bootstrap: str,
        sandbox: XledgerSandbox,
        tokens: dict[str, str],
        scratch: Path,
        say: Say,
    ) -> None:
        self.bootstrap = bootstrap
        self.sandbox = sandbox
        self.tokens = tokens
        self.scratch = scratch
        self.say = say
        self.run_id = secrets.token_hex(3)
        self.registers = f"bench.registers.{self.run_id}"

    async def _settings(self, tag: str) -> Settings:
        suffix = f"bench-{tag}-{self.run_id}"
        t = Topics()
        topics = Topics(
            payments=f"{t.payments}.{suffix}",
            registers=self.registers,
            submissions=f"{t.submissions}.{suffix}",
            receipts=f"{t.receipts}.{suffix}",
            rejections=f"{t.rejections}.{suffix}",
            dlq=f"{t.dlq}.{suffix}",
        )
        s = Settings(
            app_id=f"flyt-{suffix}",
            topics=topics,
            replication_factor=1,
            min_insync_replicas=1,
            metrics_port=None,
        )
        return await broker_kind.resolve(s, self.bootstrap)

    async def publish_registers(self, tenants: list[str]) -> None:
        s = await self._settings("registers")
        await ensure_topics(self.bootstrap, [t for t in topic_specs(s) if t.name == self.registers])
        records = [(t.encode(), data.snapshot_bytes(t)) for t in tenants]
        await publish(self.bootstrap, self.registers, records)  # one-record batches (Tansu)

    async def passthrough(self, records: list[tuple[bytes | None, bytes]]) -> tuple[float, float]:
        src, dst = f"bench.passthrough-in.{self.run_id}", f"bench.passthrough-out.{self.run_id}"
        await ensure_topics(
            self.bootstrap, [TopicSpec(src, PARTITIONS, {}), TopicSpec(dst, PARTITIONS, {})]
        )
        await publish(self.bootstrap, src, records, one_record_batches=False)
        return await passthrough(self.bootstrap, src, dst, PARTITIONS, len(records))

    async def enrich_run(self, tag: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """A worker running the enrich stage alone: the burst published at once, its rate
        from the broker times of its first and last output, its CPU per event until the
        group has committed every event."""
        s = await self._settings(tag)
        await ensure_topics(self.bootstrap, topic_specs(s))
        worker = WorkerProcess(
            self.bootstrap,
            app_id=s.app_id,
            topics=s.topics,
            sandbox_url=self.sandbox.url or "",
            tokens=self.tokens,
            log_path=self.scratch / f"worker-{tag}.log",
            extra_env={"FLYT_STAGES": "enrich"},
        )
        watch = Watch(self.bootstrap, s.topics, s.partitions)
        worker.start()
        try:
            await worker.ready()
            await watch.start()
            cpu_before = worker.cpu_s()
            await publish(self.bootstrap, s.topics.payments, event_records(events), False)
            deadline = time.monotonic() + 120 + len(events) / 100
            while not await _all_committed(self.bootstrap, s.app_id, s.topics.payments):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the enrich stage did not finish {len(events)} events")
                await asyncio.sleep(0.1)
            cpu = worker.cpu_s() - cpu_before
            for _ in range(20):  # the outputs' broker times, all of them read
                await watch.poll()
        except BaseException:
            self.say(f"worker log ({tag}): {worker.tail(10)}")
            raise
        finally:
            worker.stop()
            await watch.stop()
        first, last = watch.enrich_first_ms, watch.enrich_last_ms
        if not first or not last or last <= first:
            raise RuntimeError("the enrich stage wrote no outputs to time")
        return {
            "events": len(events),
            "events_per_s": round(len(events) / ((last - first) / 1000)),
            "cpu_us_per_event": round(cpu / len(events) * 1e6),
        }

    async def worker_run(
        self, tag: str, events: list[dict[str, Any]], rate: float | None, window_s: float
    ) -> dict[str, Any]:
        s = await self._settings(tag)
        await ensure_topics(self.bootstrap, topic_specs(s))
        worker = WorkerProcess(
            self.bootstrap,
            app_id=s.app_id,
            topics=s.topics,
            sandbox_url=self.sandbox.url or "",
            tokens=self.tokens,
            log_path=self.scratch / f"worker-{tag}.log",
            extra_env={"FLYT_POST_BATCH_WINDOW_S": str(window_s)},
        )
        watch = Watch(self.bootstrap, s.topics, s.partitions)
        expected = data.betalt_keys(events)
        worker.start()
        try:
            await worker.ready()
            await watch.start()
            requests_before = self.sandbox.stats.requests
            cpu_before = worker.cpu_s()
            records = event_records(events)
            feed = asyncio.create_task(_feed(self.bootstrap, s.topics.payments, records, rate))
            try:
                timeout = 120 + (len(events) / rate if rate else len(events) / 100)
                await watch.until_done(expected, timeout)
                await feed
            finally:
                feed.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed
            requests = self.sandbox.stats.requests - requests_before
            cpu = worker.cpu_s() - cpu_before
            rss = worker.peak_rss_mb()
        except BaseException:
            self.say(f"worker log ({tag}): {worker.tail(10)}")
            raise
        finally:
            worker.stop()
            await watch.stop()
        lat = watch.latencies_ms(expected)
        posted = len(expected & watch.receipt_ms.keys())
        first, last = watch.enrich_first_ms, watch.enrich_last_ms
        enrich = len(events) / ((last - first) / 1000) if first and last and last > first else None
        return {
            "events": len(events),
            "posted": posted,
            "rejected": len(expected & watch.rejected),
            "p50_ms": quantile(lat, 0.50),
            "p99_ms": quantile(lat, 0.99),
            "max_ms": lat[-1] if lat else None,
            "requests": requests,
            "requests_per_payment": round(requests / posted, 4) if posted else None,
            "enrich_events_per_s": round(enrich) if enrich else None,
            "worker_cpu_us_per_event": round(cpu / len(events) * 1e6),
            "worker_rss_mb": rss,
        }


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
