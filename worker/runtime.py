"""Wiring the production worker: a configured broker, the pipeline, signals, metrics.

The embedded default and the demo (Tansu, the Xledger sandbox, demo registers and
events) live in `worker.demo`; nothing here imports them (an import-linter contract).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict

from worker import health, logs, metrics
from worker.build import build
from worker.config import Settings
from worker.core.endpoints import UrlPolicy
from worker.dead_letter_gauges import DeadLetterGauges
from worker.engine import broker_kind
from worker.engine.topics import ensure_topics
from worker.kafka_clients.connection import Bootstrap, connection
from worker.pipeline.observer import Observer
from worker.pipeline.topics import topic_specs
from worker.pipeline.wiring import Pipeline, timings
from worker.topic_check import check_topics
from worker.xledger.client import ClientSettings, XledgerClient
from worker.xledger.secrets import SecretStore

log = logs.get("worker.runtime")


def make_client(s: Settings, environ: dict[str, str] | None = None) -> XledgerClient:
    return XledgerClient(
        SecretStore(environ, token_dir=s.token_dir),
        policy=UrlPolicy(allow_sandbox=s.sandbox),
        endpoint_override=s.xledger_endpoint_override,
        settings=client_settings(s),
    )


def client_settings(s: Settings) -> ClientSettings:
    """The client's hard deadline per request is the worker's (the hand-over waits for
    it); each phase of a request (connect, send, answer) gets at most two thirds of it."""
    deadline = s.xledger_request_deadline_s
    return ClientSettings(
        request_deadline_s=deadline,
        timeout_s=min(10.0, deadline * 2 / 3),
        settle_s=s.xledger_settle_s,
    )


@contextlib.asynccontextmanager
async def running_pipeline(
    s: Settings, bootstrap: Bootstrap, client: XledgerClient
) -> AsyncIterator[Pipeline]:
    """The pipeline on the broker at `bootstrap`, every client reached with the settings'
    TLS and SASL (`s.kafka`); the connection is checked first (`broker_kind.resolve`): a
    certificate or password the broker refuses raises KafkaRefused before anything starts.
    Topics that exist with another partition count raise TopicsMismatch, before anything
    is created (`worker.topic_check`)."""
    metrics.BUILD_INFO.labels(*build()).set(1)
    kafka = connection(bootstrap, s.kafka)
    s = await broker_kind.resolve(s, kafka)
    log.info("broker_profile", **asdict(s.profile()), **asdict(timings(s)))
    specs = topic_specs(s)
    await check_topics(kafka, s, specs)  # those that exist: TopicsMismatch, or warnings
    await ensure_topics(kafka, specs)
    pipeline = Pipeline(s, kafka.bootstrap, client)
    await pipeline.start()
    observer = Observer(pipeline, kafka.bootstrap)  # /ready, lag and the other state gauges
    await observer.start()
    dead_letters = DeadLetterGauges(pipeline.backend, s.topics.dlq, s.topics.audit)
    await dead_letters.start()
    try:
        yield pipeline
    finally:
        # One deadline for the whole stop, whatever the brokers do (even when they are
        # gone): the hand-over first, then what only reports.
        deadline = asyncio.get_running_loop().time() + s.stop_grace_s - 0.5
        try:
            async with asyncio.timeout_at(deadline):
                await pipeline.stop(deadline - 1.0)
                await observer.stop()
                await dead_letters.stop()
        except TimeoutError:
            log.error("worker_stop_timed_out", grace_s=s.stop_grace_s)
        await client.aclose()


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def run(s: Settings, bootstrap: str) -> None:
    """`python -m worker run`: until SIGINT/SIGTERM, or until the stream processor fails."""
    # /metrics, /healthz and /ready (worker/health.py), before the broker is reached:
    # liveness holds while the worker waits for its broker; readiness does not.
    server = health.serve(s.metrics_port, addr="0.0.0.0") if s.metrics_port else None
    try:
        stop = stop_on_signals()
        main = asyncio.create_task(_serve(s, bootstrap, stop), name="worker")
        asked = asyncio.create_task(stop.wait())
        await asyncio.wait({main, asked}, return_when=asyncio.FIRST_COMPLETED)
        if not main.done():
            # Asked to stop: the worker hands over and leaves within the grace period,
            # even in the middle of starting, even with every broker gone; a last guard
            # ends the process if something still hangs past it.
            _exit_after(s.stop_grace_s + 5.0)
            await asyncio.wait({main}, timeout=s.stop_grace_s + 0.5)
            if not main.done():
                log.error("worker_stop_timed_out", grace_s=s.stop_grace_s)
                main.cancel()
                await asyncio.wait({main}, timeout=1.0)
        asked.cancel()
        if main.done() and not main.cancelled():
            failure = main.exception()
            if failure is not None:
                raise failure  # a crash, for the caller
    finally:
        if server is not None:
            server.close()


async def _serve(s: Settings, bootstrap: str, stop: asyncio.Event) -> None:
    # Every record makes a few hundred short-lived objects; at CPython's default gen-0
    # threshold (700) the collector ran every few records and walked what the worker
    # holds (batches in hand, the register book): ~40 % of parsing a submission
    # (bench: 37 -> 25 µs). A full collection is rare at these thresholds: whatever holds
    # much must not be left in a reference cycle (never_twice.Waits, session.py's answers).
    gc.set_threshold(50_000, 20, 100)
    async with running_pipeline(s, bootstrap, make_client(s)) as pipeline:
        # What start-up built lives as long as the process: no collection need walk it.
        gc.freeze()
        log.info(
            "worker_running",
            bootstrap=bootstrap,
            metrics_port=s.metrics_port,
            version=build()[0],
            commit=build()[1],
        )
        await until_stopped(stop, pipeline)


def _exit_after(seconds: float) -> None:
    """A last guard for a clean stop: if the process still runs after `seconds` (a client
    library's thread or task that will not end), it exits with status 1."""

    def exit_now() -> None:
        log.error("worker_forced_exit", after_s=seconds)
        os._exit(1)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()


class WorkerCrashed(RuntimeError):
    """The stream processor stopped by itself; the process should exit and be restarted."""


async def until_stopped(stop: asyncio.Event, pipeline: Pipeline) -> None:
    """Until SIGINT/SIGTERM, or until the engine stops on its own (a crash)."""
    signal_wait = asyncio.create_task(stop.wait())
    crash_wait = asyncio.create_task(pipeline.failed())
    done, pending = await asyncio.wait(
        {signal_wait, crash_wait}, return_when=asyncio.FIRST_COMPLETED
    )
    for task in pending:
        task.cancel()
    if crash_wait in done and not stop.is_set():
        reason = crash_wait.result()
        log.error("worker_crashed", error=repr(reason))
        raise WorkerCrashed(repr(reason))
