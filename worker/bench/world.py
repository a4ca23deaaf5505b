"""What every bench plan stands on: a broker, the Xledger sandbox with every registered
tenant's entity, the registers topic, the workers' settings and processes, and the
anchor's runs over topics of their own (the worker runs are `worker_runs.py`). Everything
started here is stopped however a run ends: the broker and sandbox by their context
managers. `diagnostics.py` keeps the workers' logs and looks into a worker (py-spy,
tracemalloc).
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
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from worker.bench import data
from worker.bench.anchor import passthrough, two_hop
from worker.bench.diagnostics import NONE, Diagnostics
from worker.bench.watch import topic_times
from worker.bench.worker_proc import WorkerProcess
from worker.config import Settings, Topics
from worker.contracts import RegisterSnapshot
from worker.devenv.feed import publish
from worker.devenv.sandbox import FaultProfile, XledgerSandbox, entity_from_snapshot
from worker.engine import broker_kind
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
        identifiers up by scanning every line of its entity: a ledger kept across runs (a
        month-start run leaves 100,000 lines) would slow each later run's lookups, on the
        cores the worker is measured on."""
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
