"""What every bench plan stands on: a broker, the Xledger sandbox with every registered
tenant's entity, the registers topic, and the runs (the anchor, the enrich stage alone,
whole workers) over topics of their own. Everything started here is stopped however a
run ends: the broker and sandbox by their context managers, each worker by `finally`.
`diagnostics.py` keeps the workers' logs and looks into a worker (py-spy, tracemalloc).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.bench import data
from worker.bench.anchor import passthrough, two_hop
from worker.bench.diagnostics import NONE, Diagnostics, PySpy, held_by
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
from worker.config import Settings, Topics
from worker.contracts import RegisterSnapshot
from worker.devenv.feed import event_records, publish
from worker.devenv.feed import producer as feed_producer
from worker.devenv.sandbox import FaultProfile, XledgerSandbox, entity_from_snapshot
from worker.engine import broker_kind
from worker.engine.lag import group_positions
from worker.engine.topics import TopicSpec, ensure_topics
from worker.pipeline.topics import topic_specs
from worker.xledger.secrets import env_name

DEFAULT_WINDOW_S = Settings().post_batch_window_s
PARTITIONS = Settings().partitions

Say = Callable[[str], None]


def say_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextlib.contextmanager
def interrupts_as_keyboard() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the clean-up below stops what was started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def broker(kind: str, say: Say, brokers: int = 1) -> Iterator[str]:
    """Tansu, or Apache Kafka with `brokers` brokers (KRaft, from the jars). Start it from
    the thread that lives as long as it: its processes die with that thread's process."""
    if kind == "tansu":
        from worker.devenv.tansu import EmbeddedBroker

        with EmbeddedBroker() as tansu:
            say(f"broker: Tansu at {tansu.bootstrap}")
            yield tansu.bootstrap
    else:
        from worker.devenv.kafka_cluster import KafkaCluster, kafka_version

        with KafkaCluster(brokers=brokers) as cluster:
            version = kafka_version()
            say(f"broker: Apache Kafka {version} ({brokers} brokers) at {cluster.bootstrap}")
            yield cluster.bootstrap


@dataclass
class Run:
    """One whole-worker run: its figures (JSON-ready), and what the report draws."""

    figures: dict[str, Any]
    latencies_ms: list[int] = field(default_factory=list)  # Betalt → receipt, sorted
    enrich_ms: list[int] = field(default_factory=list)  # broker times of enrich outputs
    receipt_ms: list[int] = field(default_factory=list)  # broker times of receipts
    diagnostics: dict[str, Any] = field(default_factory=dict)  # py-spy's, tracemalloc's


@contextlib.asynccontextmanager
async def world(
    bootstrap: str,
    registered_tenants: int,
    sandbox_latency_s: float,
    say: Say,
    replication: int = 1,
    diagnostics: Diagnostics = NONE,
) -> AsyncIterator[Bench]:
    """A token per tenant, their registers published, and the sandbox (a fresh one per
    run: `Bench.fresh_sandbox`); stopped and cleaned up on the way out (the scratch
    folder too: the workers' logs stay only in `diagnostics.log_dir`)."""
    all_tenants = data.tenant_ids(registered_tenants)
    scratch = Path(tempfile.mkdtemp(prefix="flyt-bench-"))
    tokens = {tenant: secrets.token_urlsafe(24) for tenant in all_tenants}
    bench = Bench(bootstrap, tokens, sandbox_latency_s, scratch, say, replication, diagnostics)
    try:
        await bench.publish_registers(all_tenants)
        yield bench
    finally:
        await bench.stop_sandbox()
        shutil.rmtree(scratch, ignore_errors=True)


class Bench:
    def __init__(
        self,
        bootstrap: str,
        tokens: dict[str, str],
        sandbox_latency_s: float,
        scratch: Path,
        say: Say,
        replication: int = 1,
        diagnostics: Diagnostics = NONE,
    ) -> None:
        self.bootstrap = bootstrap
        self.sandbox_latency_s = sandbox_latency_s
        self.tenant_tokens = tokens  # tenant → its token
        self.tokens = {env_name(t): token for t, token in tokens.items()}  # the worker's env
        self.scratch = scratch
        self.say = say
        self.replication = replication
        self.diagnostics = diagnostics
        self.logs = diagnostics.log_dir or scratch  # the workers' logs, py-spy's output
        self.logs.mkdir(parents=True, exist_ok=True)
        self.run_id = secrets.token_hex(3)
        self.registers = f"bench.registers.{self.run_id}"
        self._sandbox: XledgerSandbox | None = None

    @property
    def sandbox(self) -> XledgerSandbox:
        assert self._sandbox is not None, "no sandbox: fresh_sandbox() first"
        return self._sandbox

    async def fresh_sandbox(self) -> XledgerSandbox:
        """A new sandbox for the next run, every tenant's entity in it, answering every
        request `sandbox_latency_s` late. New per run because the sandbox looks a batch's
        identifiers up by scanning every line it holds: a ledger kept across runs (a
        month-start run leaves 100,000 lines) would slow each later run's lookups."""
        await self.stop_sandbox()
        sandbox = XledgerSandbox(
            faults=FaultProfile(slow=1.0, slow_seconds=self.sandbox_latency_s), burst_limit=20
        )
        for i, (tenant, token) in enumerate(self.tenant_tokens.items()):
            snap = RegisterSnapshot.model_validate(data.snapshot_dict(tenant))
            sandbox.add_entity(token, entity_from_snapshot(snap, owner_db_id=50_000_000 + i))
        await sandbox.start()
        self._sandbox = sandbox
        return sandbox

    async def stop_sandbox(self) -> None:
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            await sandbox.stop()

    async def settings(self, tag: str, partitions: int = PARTITIONS) -> Settings:
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
            partitions=partitions,
            replication_factor=self.replication,
            min_insync_replicas=min(2, self.replication),
            metrics_port=None,
        )
        return await broker_kind.resolve(s, self.bootstrap)

    def worker(
        self, s: Settings, name: str, extra_env: dict[str, str], traced: bool = False
    ) -> WorkerProcess:
        """A worker process (not started); `traced`: under tracemalloc (`traced_worker`),
        its snapshot written to `tracemalloc_path(name)`."""
        env = {
            "FLYT_PARTITIONS": str(s.partitions),
            "FLYT_REPLICATION_FACTOR": str(s.replication_factor),
            "FLYT_MIN_INSYNC_REPLICAS": str(s.min_insync_replicas),
            **extra_env,
        }
        if traced:
            env["BENCH_TRACEMALLOC_OUT"] = str(self.tracemalloc_path(name))
        return WorkerProcess(
            self.bootstrap,
            app_id=s.app_id,
            topics=s.topics,
            sandbox_url=self.sandbox.url or "",
            tokens=self.tokens,
            log_path=self.logs / f"worker-{name}.log",
            extra_env=env,
            module="worker.bench.traced_worker" if traced else "worker",
        )

    def tracemalloc_path(self, name: str) -> Path:
        return self.logs / f"tracemalloc-{name}.snapshot"

    def announce(self, worker: WorkerProcess, name: str) -> None:
        """The worker's pid and log, and the py-spy command to look into it meanwhile."""
        kept = "" if self.diagnostics.log_dir else ", deleted at the end (--log-dir keeps it)"
        self.say(
            f"worker {name}: pid {worker.pid}, log {worker.log_path}{kept}; "
            f"look into it meanwhile: py-spy dump --pid {worker.pid}"
        )

    async def publish_registers(self, tenants: list[str]) -> None:
        s = await self.settings("registers")
        await ensure_topics(self.bootstrap, [t for t in topic_specs(s) if t.name == self.registers])
        records = [(t.encode(), data.snapshot_bytes(t)) for t in tenants]
        await publish(self.bootstrap, self.registers, records)  # one-record batches (Tansu)

    async def passthrough(
        self,
        records: list[tuple[bytes | None, bytes]],
        engine_batches: bool = False,
        tag: str = "",
    ) -> tuple[float, float, list[int]]:
        """The anchor over `records`: events/s, CPU µs per event, its outputs' broker times
        (`engine_batches`: its producer with the engine's batch size; `tag`: topics of
        its own, for a plan that runs it more than once)."""
        tag = f"{tag}{'engine-batches.' if engine_batches else ''}{self.run_id}"
        src, dst = f"bench.passthrough-in.{tag}", f"bench.passthrough-out.{tag}"
        specs = [TopicSpec(src, PARTITIONS, {}), TopicSpec(dst, PARTITIONS, {})]
        await ensure_topics(self.bootstrap, specs)
        await publish(self.bootstrap, src, records, one_record_batches=False)
        rate, cpu = await passthrough(
            self.bootstrap, src, dst, PARTITIONS, len(records), engine_batches
        )
        return rate, cpu, await topic_times(self.bootstrap, dst, PARTITIONS)

    async def two_hop(self, tag: str, records: list[tuple[bytes | None, bytes]]) -> dict[str, Any]:
        """The two-hop anchor (`anchor.two_hop`) over `records`, on topics of its own:
        its events/s and CPU µs per event (both hops' CPU, per event)."""
        src, mid, dst = (f"bench.two-hop-{hop}.{tag}.{self.run_id}" for hop in ("in", "mid", "out"))
        await ensure_topics(self.bootstrap, [TopicSpec(t, PARTITIONS, {}) for t in (src, mid, dst)])
        await publish(self.bootstrap, src, records, one_record_batches=False)
        async with asyncio.timeout(120 + len(records) / 500):
            rate, cpu = await two_hop(self.bootstrap, src, mid, dst, PARTITIONS, len(records))
        return {"events_per_s": round(rate), "cpu_us_per_event": round(cpu)}

    async def enrich_run(self, tag: str, events: list[dict[str, Any]]) -> Run:
        """A worker running the enrich stage alone over the burst, like for like with the
        anchor: the events are on the broker before the worker starts, and nothing else in
        the bench runs meanwhile (no publisher, no reader sharing the cores). Its rate and
        CPU per event are taken between its first and last output (broker times; its CPU
        sampled every 10 ms, over a window that holds them), over the outputs after the
        first: the work of a worker that is running, not its start (registers, group join)."""
        s = await self.settings(tag)
        await ensure_topics(self.bootstrap, topic_specs(s))
        await self.fresh_sandbox()
        await publish(self.bootstrap, s.topics.payments, event_records(events), False)
        worker = self.worker(s, tag, {"FLYT_STAGES": "enrich"})
        samples: list[tuple[float, float]] = []  # (epoch ms, CPU s)
        worker.start()
        self.announce(worker, tag)
        sampling = asyncio.create_task(sample_cpu(worker, samples))
        try:
            deadline = time.monotonic() + 180 + len(events) / 100
            while not await all_committed(self.bootstrap, s.app_id, s.topics.payments):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the enrich stage did not finish {len(events)} events")
                if worker.exited():
                    raise RuntimeError(f"the worker exited: {worker.tail()}")
                await asyncio.sleep(0.1)
        except BaseException:
            self.say(f"worker log ({tag}): {worker.tail(10)}")
            raise
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
            worker.stop()
        outputs = sorted(  # its submissions' and rejections' broker times
            await topic_times(self.bootstrap, s.topics.submissions, s.partitions)
            + await topic_times(self.bootstrap, s.topics.rejections, s.partitions)
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
        self,
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
        s = await self.settings(tag, partitions)
        await ensure_topics(self.bootstrap, topic_specs(s))
        await self.fresh_sandbox()
        env = {"FLYT_POST_BATCH_WINDOW_S": str(window_s)}
        traced = self.diagnostics.tracemalloc
        names = [f"{tag}-{i}" for i in range(workers)]
        procs = [self.worker(s, name, env, traced) for name in names]
        watch = Watch(self.bootstrap, s.topics, s.partitions)
        expected = data.betalt_keys(events)
        spies: list[PySpy] = []
        incomplete: str | None = None
        try:
            for w, name in zip(procs, names, strict=True):
                w.start()
                self.announce(w, name)
            for w in procs:
                await w.ready()
            if profile and self.diagnostics.py_spy:  # from ready on: the run, not the start
                for w, name in zip(procs, names, strict=True):
                    spies.append(PySpy(w.pid, self.logs / f"py-spy-{name}.txt"))
            if workers > 1:
                await _balanced(procs, s.topics.payments, s.partitions)
            await watch.start()
            stats = self.sandbox.stats
            before = (stats.requests, stats.queries, stats.mutations, stats.burst_errors_sent)
            cpu_before = [w.cpu_s() for w in procs]
            records = event_records(events)
            feed = asyncio.create_task(_feed(self.bootstrap, s.topics.payments, records, rate))
            try:
                timeout = 120 + (len(events) / rate if rate else len(events) / 100)
                try:
                    await watch.until_done(expected, timeout)
                except TimeoutError as exc:
                    if not incomplete_ok:
                        raise
                    incomplete = str(exc)
                    self.say(f"{tag}: {incomplete}; measured as it stands")
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
                self.say(f"worker log ({tag}): {w.tail(10)}")
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
                held_by(self.tracemalloc_path(name))
                if self.tracemalloc_path(name).exists()
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


async def all_committed(bootstrap: str, group: str, topic: str) -> bool:
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
