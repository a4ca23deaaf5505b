"""Wiring the production worker: a configured broker, the pipeline, signals, metrics.

The embedded default and the demo (Tansu, the Xledger sandbox, demo registers and
events) live in `worker.demo`; nothing here imports them (an import-linter contract).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import asdict

from worker import health, logs
from worker.config import Settings
from worker.core.endpoints import UrlPolicy
from worker.stream import broker_kind
from worker.stream.observer import Observer
from worker.stream.pipeline import Pipeline
from worker.stream.topics import ensure_topics, topic_specs
from worker.xledger.client import XledgerClient
from worker.xledger.secrets import SecretStore

log = logs.get("worker.runtime")


def make_client(s: Settings, environ: dict[str, str] | None = None) -> XledgerClient:
    return XledgerClient(
        SecretStore(environ, token_dir=s.token_dir),
        policy=UrlPolicy(allow_sandbox=s.sandbox),
        endpoint_override=s.xledger_endpoint_override,
    )


@contextlib.asynccontextmanager
async def running_pipeline(
    s: Settings, bootstrap: str, client: XledgerClient
) -> AsyncIterator[Pipeline]:
    s = await broker_kind.resolve(s, bootstrap)
    log.info("broker_profile", **asdict(s.profile()))
    await ensure_topics(bootstrap, topic_specs(s))
    pipeline = Pipeline(s, bootstrap, client)
    await pipeline.start()
    observer = Observer(pipeline, bootstrap)  # /ready, lag and the other state gauges
    await observer.start()
    try:
        yield pipeline
    finally:
        await observer.stop()
        await pipeline.stop()
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
        async with running_pipeline(s, bootstrap, make_client(s)) as pipeline:
            log.info("worker_running", bootstrap=bootstrap, metrics_port=s.metrics_port)
            await until_stopped(stop, pipeline)
    finally:
        if server is not None:
            server.close()


class WorkerCrashed(RuntimeError):
    """The stream processor stopped by itself; the process should exit and be restarted."""


async def until_stopped(stop: asyncio.Event, pipeline: Pipeline) -> None:
    """Until SIGINT/SIGTERM, or until the faust app stops on its own (a crash)."""
    signal_wait = asyncio.create_task(stop.wait())
    app_wait = asyncio.create_task(pipeline.app.wait_until_stopped())
    done, pending = await asyncio.wait({signal_wait, app_wait}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if app_wait in done and not stop.is_set():
        reason = getattr(pipeline.app, "_crash_reason", None)
        log.error("worker_crashed", error=repr(reason))
        raise WorkerCrashed(repr(reason))
