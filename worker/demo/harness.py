"""The embedded default (`make run`) and the one-shot demo: Tansu or a given broker, the
Xledger sandbox with the demo tenants, demo registers and events. Not production code:
production modules never import this package (an import-linter contract)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, generate_latest

from worker import health, logs, metrics
from worker.config import KafkaSecurity, Settings, Topics
from worker.demo.events import bad_event_lines, generate_events
from worker.demo.snapshots import demo_snapshot_dicts, demo_snapshots
from worker.demo.watcher import OutcomeWatcher
from worker.devenv.feed import event_records, publish, snapshot_records
from worker.devenv.sandbox import PROFILES, XledgerSandbox, entity_from_snapshot, serve
from worker.devenv.tansu import EmbeddedBroker
from worker.engine import broker_kind
from worker.engine.topics import ensure_topics
from worker.kafka_clients.connection import Bootstrap, connection
from worker.pipeline.topics import topic_specs
from worker.runtime import make_client, running_pipeline, stop_on_signals, until_stopped
from worker.xledger.secrets import env_name

log = logs.get("worker.demo")


async def start_demo_sandbox(profile: str = "none") -> tuple[XledgerSandbox, dict[str, str]]:
    """The sandbox with the demo tenants; returns it and the tokens as XLEDGER_TOKEN_* vars."""
    sandbox = XledgerSandbox(faults=PROFILES[profile])
    environ: dict[str, str] = {}
    for i, snap in enumerate(demo_snapshots()):
        token = secrets.token_urlsafe(24)
        sandbox.add_entity(token, entity_from_snapshot(snap, owner_db_id=42_365_431 + i))
        environ[env_name(snap.settings.token_ref)] = token
    await sandbox.start()
    return sandbox, environ


def serve_sandbox(
    port: int, profile: str, token_dir: Path | None, ledger: Path | None = None
) -> None:
    """`python -m worker sandbox`: the sandbox with the demo tenants until Ctrl-C or
    SIGTERM; their tokens read from `token_dir`, or written there when missing."""
    serve(port, profile, token_dir, demo_snapshots(), ledger)


@contextlib.asynccontextmanager
async def embedded_default(
    s: Settings, profile: str = "none"
) -> AsyncIterator[tuple[Settings, str, XledgerSandbox, dict[str, str]]]:
    """Tansu, the sandbox and the demo registers; yields settings fit to use them."""
    with EmbeddedBroker() as broker:
        sandbox, environ = await start_demo_sandbox(profile)
        try:
            s = replace(s.embedded(), sandbox=True, xledger_endpoint_override=sandbox.url)
            await ensure_topics(broker.bootstrap, topic_specs(s))
            await publish(
                broker.bootstrap, s.topics.registers, snapshot_records(demo_snapshot_dicts())
            )
            log.info("embedded_default_ready", bootstrap=broker.bootstrap, xledger=sandbox.url)
            yield s, broker.bootstrap, sandbox, environ
        finally:
            await sandbox.stop()


async def run_embedded(s: Settings, demo_rate_per_s: float = 20.0) -> None:
    """`python -m worker run --embedded` (`make run`): Tansu, the sandbox and demo events."""
    if s.metrics_port:  # /metrics, /healthz and /ready, as the production worker has
        health.serve(s.metrics_port, addr="127.0.0.1")
    stop = stop_on_signals()
    async with contextlib.AsyncExitStack() as stack:
        es, bootstrap, sandbox, environ = await stack.enter_async_context(embedded_default(s))
        pipeline = await stack.enter_async_context(
            running_pipeline(es, bootstrap, make_client(es, environ))
        )
        feeder = asyncio.create_task(_demo_feed(es, bootstrap, demo_rate_per_s))
        reporter = asyncio.create_task(_report(sandbox))
        log.info(
            "worker_running",
            mode="embedded",
            bootstrap=bootstrap,
            xledger_sandbox=sandbox.url,
            metrics_port=s.metrics_port,
        )
        try:
            await until_stopped(stop, pipeline)
        finally:
            feeder.cancel()
            reporter.cancel()


async def _demo_feed(s: Settings, bootstrap: str, rate: float) -> None:
    """A stream of demo events at about `rate` per second, in bursts of one second."""
    for seed in itertools.count(1):
        events = list(generate_events(max(1, int(rate)), seed=seed))
        await publish(bootstrap, s.topics.payments, event_records(events), one_record_batches=False)
        await asyncio.sleep(1.0)


async def _report(sandbox: XledgerSandbox) -> None:
    while True:
        await asyncio.sleep(5)
        log.info(
            "progress",
            **counts(),
            xledger_lines=len(sandbox.ledger()),
            xledger_requests=sandbox.stats.requests,
        )


def _counter(counter: Any, **labels: str) -> float:
    total = 0.0
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total


def counts() -> dict[str, int]:
    return {
        outcome: int(_counter(metrics.EVENTS, outcome=outcome))
        for outcome in ("submitted", "rejected", "ignored", "duplicate", "invalid")
    }


async def demo(
    n_events: int,
    n_bad: int,
    faults: bool,
    bootstrap: str | None,
    ledger_out: Path | None,
    metrics_out: Path | None,
    timeout_s: float = 300.0,
    rate: float | None = None,
    kafka: KafkaSecurity | None = None,
) -> dict[str, Any]:
    """`python -m worker demo`: the whole pipeline once; returns the summary. `kafka`: how
    to reach the given broker (TLS, SASL); plain by default."""
    s = replace(Settings(), metrics_port=None, kafka=kafka or KafkaSecurity())
    events = list(generate_events(n_events))
    bad = bad_event_lines(n_bad)
    betalt = sum(1 for e in events if e["status"] == "Betalt")
    before = counts()
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        bs: Bootstrap
        if bootstrap is None:
            es, bs, sandbox, environ = await stack.enter_async_context(
                embedded_default(s, "mixed" if faults else "none")
            )
        else:  # an existing broker stays up afterwards; topics are made unique per run
            sandbox, environ = await start_demo_sandbox("mixed" if faults else "none")
            stack.push_async_callback(sandbox.stop)
            run_id = secrets.token_hex(3)
            es = replace(
                s,
                sandbox=True,
                xledger_endpoint_override=sandbox.url,
                app_id=f"{s.app_id}-demo-{run_id}",
                topics=_suffixed(s, run_id),
            )
            bs = connection(bootstrap, s.kafka)
            # Operators point `dlq list`, `status` … at these (FLYT_TOPIC_* or --topic).
            names = ", ".join(f"{k}={v}" for k, v in asdict(es.topics).items())
            print(f"demo topics on {bs}: {names}", file=sys.stderr, flush=True)
            es = await fit_to_cluster(es, bs)
            await ensure_topics(bs, topic_specs(es))
            await publish(bs, es.topics.registers, snapshot_records(demo_snapshot_dicts()))
        pipeline = await stack.enter_async_context(
            running_pipeline(es, bs, make_client(es, environ))
        )
        # Measure the pipeline, not its start-up: publish once it has joined and recovered.
        await pipeline.wait_ready(120)
        watcher = OutcomeWatcher(bs, es)
        await watcher.start()
        stack.push_async_callback(watcher.stop)
        feed = asyncio.create_task(_feed(bs, es.topics.payments, event_records(events, bad), rate))
        stack.push_async_callback(_cancel, feed)
        deadline = time.monotonic() + timeout_s
        summary: dict[str, Any] = {}
        enrich_first = enrich_last = None
        while True:
            await watcher.poll()
            now = counts()
            delta = {k: now[k] - before[k] for k in now}
            read = sum(delta.values())  # events the enrich stage has finished
            if read and enrich_first is None:
                enrich_first = time.monotonic()
            if read >= len(events) + len(bad) and enrich_last is None:
                enrich_last = time.monotonic()
            summary = {
                "events": len(events) + len(bad),
                "betalt": betalt,
                "posted": len(watcher.posted),
                "rejected": len(watcher.rejected),
                "ignored": delta["ignored"],
                "duplicates": delta["duplicate"],
                "dead_lettered": watcher.dead_lettered,
            }
            accounted = sum(
                summary[k] for k in ("posted", "rejected", "ignored", "duplicates", "dead_lettered")
            )
            summary["unaccounted"] = summary["events"] - accounted
            if summary["unaccounted"] <= 0 or time.monotonic() > deadline:
                break
        summary["xledger_requests"] = sandbox.stats.requests
        summary["topics"] = asdict(es.topics)
        summary["elapsed_s"] = round(time.monotonic() - started, 2)
        if enrich_first is not None and enrich_last is not None and enrich_last > enrich_first:
            summary["enrich_events_per_s"] = round(summary["events"] / (enrich_last - enrich_first))
        summary.update(watcher.latency_quantiles())
        if ledger_out is not None:
            sandbox.dump_ledger(ledger_out)
        if metrics_out is not None:
            metrics_out.write_bytes(generate_latest(REGISTRY))
    return summary


async def fit_to_cluster(s: Settings, bootstrap: Bootstrap) -> Settings:
    """The demo's settings for whatever cluster it is pointed at: its broker kind, and no
    more copies of a topic than the cluster has brokers (a one-broker development Kafka)."""
    facts = await broker_kind.probe(connection(bootstrap, s.kafka))
    s = replace(s, broker_kind=facts.kind)
    p = s.profile()
    if p.replication_factor > facts.brokers:
        s = replace(
            s,
            replication_factor=facts.brokers,
            min_insync_replicas=min(p.min_insync_replicas, facts.brokers),
        )
    return s


async def _feed(
    bootstrap: Bootstrap, topic: str, records: list[tuple[bytes | None, bytes]], rate: float | None
) -> None:
    """All at once, or about `rate` records per second in tenths of a second."""
    if not rate:
        await publish(bootstrap, topic, records, one_record_batches=False)
        return
    step = max(1, round(rate / 10))
    for start in range(0, len(records), step):
        t0 = time.monotonic()
        await publish(bootstrap, topic, records[start : start + step], one_record_batches=False)
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _suffixed(s: Settings, run_id: str) -> Topics:
    """Every topic of the run its own, the tenant pauses too: a pause left on the broker by
    an earlier run must not hold this one's payments."""
    t = s.topics
    return Topics(**{f.name: f"{getattr(t, f.name)}.demo-{run_id}" for f in fields(Topics)})
