"""/healthz and /ready beside /metrics: for Kubernetes' probes, and for a person with curl.

- `/healthz` (liveness): 200 while the process is alive and its event loop is not wedged.
  The HTTP server runs in a thread, as prometheus_client's does, so it still answers
  when the loop is stuck; the loop beats a heartbeat every second, and /healthz fails
  once the last beat is older than `wedged_after_s`. Kubernetes then restarts the pod.
- `/ready` (readiness): 200 only while the check the loop last ran says so (for the
  worker: register cache caught up, partitions assigned, stream processor running, see
  `worker/pipeline/observer.py`); 503 with the reason otherwise, and when the heartbeat
  is stale.
- anything else: the Prometheus exposition (`/metrics`).

Bodies are one line of plain text naming the reason; no setting, no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from worker import logs, metrics

log = logs.get("worker.health")

HEARTBEAT_S = 1.0
WEDGED_AFTER_S = 30.0  # far above any pause the worker makes on purpose


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


NOT_STARTED = Readiness(False, "the stream processor is not running")


class Health:
    """What the probes answer. Written on the event loop, read by the HTTP thread: every
    write replaces a whole immutable value, so the thread never sees half of one."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wedged_after_s: float = WEDGED_AFTER_S,
    ) -> None:
        self._clock = clock
        self.wedged_after_s = wedged_after_s
        self._beat_at = clock()
        self._readiness = NOT_STARTED
        self._check: Callable[[], Readiness] | None = None

    def watch(self, check: Callable[[], Readiness]) -> None:
        """Readiness comes from `check`, run on the event loop at every beat."""
        self._check = check

    def unwatch(self) -> None:
        self._check = None
        self._readiness = NOT_STARTED
        metrics.WORKER_READY.set(0)

    def beat(self) -> None:
        """One heartbeat, on the event loop: proves the loop runs, refreshes readiness."""
        check = self._check
        readiness = NOT_STARTED
        if check is not None:
            try:
                readiness = check()
            except Exception as exc:  # a broken check must not stop the heartbeat
                readiness = Readiness(False, f"readiness check failed: {type(exc).__name__}")
        self._readiness = readiness
        self._beat_at = self._clock()
        metrics.WORKER_READY.set(1 if readiness.ready else 0)

    async def heartbeat(self, interval_s: float = HEARTBEAT_S) -> None:
        """Beats until cancelled; also measures how late the loop wakes up."""
        while True:
            self.beat()
            started = self._clock()
            await asyncio.sleep(interval_s)
            metrics.EVENT_LOOP_LAG_SECONDS.set(max(0.0, self._clock() - started - interval_s))

    def silent_for(self) -> float:
        return self._clock() - self._beat_at

    def liveness(self) -> tuple[bool, str]:
        silent = self.silent_for()
        if silent > self.wedged_after_s:
            return False, f"event loop silent for {silent:.0f} s (wedged)"
        return True, "alive"

    def readiness(self) -> tuple[bool, str]:
        alive, why = self.liveness()
        if not alive:
            return False, why
        r = self._readiness
        return r.ready, r.reason


HEALTH = Health()  # the process's own, as prometheus_client's REGISTRY is


def wsgi_app(health: Health = HEALTH) -> Callable[..., Iterable[bytes]]:
    exposition = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/ready"):
            ok, reason = health.liveness() if path == "/healthz" else health.readiness()
            status = "200 OK" if ok else "503 Service Unavailable"
            body = f"{reason}\n".encode()
            start_response(
                status,
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return exposition(environ, start_response)  # type: ignore[no-any-return]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a probe in flight never holds up the process's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        pass


class Served:
    """A running health and metrics server; `close()` stops it and its heartbeat."""

    def __init__(self, server: WSGIServer, heartbeat: asyncio.Task[None] | None) -> None:
        self._server = server
        self._heartbeat = heartbeat
        self.port: int = server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self._server.shutdown()
        self._server.server_close()


def serve(port: int, addr: str = "0.0.0.0", health: Health = HEALTH) -> Served:
    """/metrics, /healthz and /ready on `port` (0: any free port, see `Served.port`).

    Called from the event loop, it also starts the loop's heartbeat."""
    server = make_server(addr, port, wsgi_app(health), _Server, handler_class=_QuietHandler)
    heartbeat = None
    with contextlib.suppress(RuntimeError):  # no running loop: a caller beats by itself
        heartbeat = asyncio.get_running_loop().create_task(health.heartbeat(), name="heartbeat")
    served = Served(server, heartbeat)
    log.info("metrics_server_listening", addr=addr, port=served.port)
    return served
