"""`python -m worker bench`: one broker, one run, every figure of issue 13.

Phases, in order, each on topics of its own (the registers topic is shared):
1. the pure core and the register book (no broker);
2. the anchor: plain aiokafka over the burst's events (`worker/engine/anchor.py`), with
   aiokafka's default producer batch size and again with the engine's;
3. the enrich stage alone (a worker with FLYT_STAGES=enrich) over the same 10,000
   events: its rate and CPU per event, like for like with each anchor (`ratio`,
   `cpu_ratio`; `ratio_engine_batches`, `cpu_ratio_engine_batches`);
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
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

from worker.bench import data
from worker.bench.core import core_figures
from worker.bench.diagnostics import NONE, Diagnostics
from worker.bench.watch import per_second
from worker.bench.worker_runs import enrich_run, worker_run
from worker.bench.world import (
    DEFAULT_WINDOW_S,
    PARTITIONS,
    Say,
    broker,
    interrupts_as_keyboard,
    load,
    say_stderr,
    world,
)
from worker.contracts import RegisterSnapshot
from worker.core.register_book import RegisterBook
from worker.devenv.feed import event_records

RATE_BIN_S = 0.25  # the report's events/s over time: bins of this


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


def run(
    plan: Plan,
    broker_kind: str,
    say: Say = say_stderr,
    series: dict[str, Any] | None = None,
    diagnostics: Diagnostics = NONE,
) -> dict[str, Any]:
    """Start the broker (from this thread: its processes die with it), run every phase,
    stop everything; returns the summary. `series`, when given, receives what the report
    draws (latencies, events/s over time)."""
    load_start = load()
    started = time.monotonic()
    with interrupts_as_keyboard(), broker(broker_kind, say) as bootstrap:
        out = series if series is not None else {}
        summary = asyncio.run(_phases(plan, bootstrap, say, out, diagnostics))
    summary = {"broker": broker_kind, **summary}
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    summary["loadavg_start"] = load_start
    summary["loadavg_end"] = load()
    return summary


async def _phases(
    plan: Plan, bootstrap: str, say: Say, series: dict[str, Any], diagnostics: Diagnostics
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    core = core_figures(plan.core_events)
    out["core_us_per_event"] = core["core_us_per_event"]
    out["parse_us_per_event"] = core["parse_us_per_event"]
    say(f"core: {core}")
    out.update(_snapshot_figures(plan.registered_tenants))
    say(f"snapshots: {plan.registered_tenants} tenants, {out['snapshot_mb']} MB as JSON")

    burst_tenants = data.tenant_ids(plan.burst_tenants)
    steady_tenants = data.tenant_ids(plan.steady_tenants)
    burst = data.events_for(burst_tenants, plan.burst_events, seed=101)
    rates: dict[str, list[float]] = {}
    latencies: dict[str, list[int]] = {}
    series.update({"rate_bin_s": RATE_BIN_S, "events_per_s": rates, "latency_ms": latencies})
    async with world(
        bootstrap, plan.registered_tenants, plan.sandbox_latency_s, say, diagnostics=diagnostics
    ) as bench:
        pt, pt_cpu, pt_times = await bench.passthrough(event_records(burst))
        out["passthrough_events_per_s"] = round(pt)
        out["passthrough_cpu_us_per_event"] = round(pt_cpu)
        rates["anchor (plain aiokafka)"] = per_second(pt_times, RATE_BIN_S)
        say(f"passthrough: {pt:.0f} events/s, {pt_cpu:.0f} µs CPU per event")

        # The stricter anchor: its producer with the engine's batch size.
        st, st_cpu, _ = await bench.passthrough(event_records(burst), engine_batches=True)
        out["passthrough_engine_batches_events_per_s"] = round(st)
        out["passthrough_engine_batches_cpu_us_per_event"] = round(st_cpu)
        say(f"passthrough, engine's batch size: {st:.0f} events/s, {st_cpu:.0f} µs CPU")

        # Like for like with the anchor: the enrich stage alone (a worker running only it,
        # FLYT_STAGES=enrich) over the same events: consume, read, evaluate, produce.
        e = await enrich_run(bench, "enrich", burst)
        rate, cpu = e.figures["events_per_s"], e.figures["cpu_us_per_event"]
        out["enrich_events_per_s"] = rate
        out["enrich_cpu_us_per_event"] = cpu
        out["ratio"] = round(rate / pt, 3) if pt else None
        out["cpu_ratio"] = round(pt_cpu / cpu, 3)
        out["ratio_engine_batches"] = round(rate / st, 3) if st else None
        out["cpu_ratio_engine_batches"] = round(st_cpu / cpu, 3)
        rates["enrich stage alone"] = per_second(e.enrich_ms, RATE_BIN_S)
        say(f"enrich stage alone: {e.figures}")

        # The whole worker (both stages, posting to the sandbox) over the same burst.
        run_b = await worker_run(bench, "burst", burst, rate=None, window_s=DEFAULT_WINDOW_S)
        b = run_b.figures
        out["worker_enrich_events_per_s"] = b["enrich_events_per_s"]
        out["burst_p50_ms"] = b["p50_ms"]
        out["burst_p99_ms"] = b["p99_ms"]
        out["xledger_requests_per_payment_burst"] = b["requests_per_payment"]
        out["worker_rss_mb"] = b["worker_rss_mb"]
        out["worker_cpu_us_per_event"] = b["worker_cpu_us_per_event"]
        rates["whole worker: enrich outputs"] = per_second(run_b.enrich_ms, RATE_BIN_S)
        rates["whole worker: receipts"] = per_second(run_b.receipt_ms, RATE_BIN_S)
        latencies["burst"] = run_b.latencies_ms
        say(f"burst: {b}")

        windows = sorted({*plan.windows, DEFAULT_WINDOW_S})
        table = []
        for i, window in enumerate(windows):
            events = data.events_for(steady_tenants, int(plan.rate * plan.steady_s), seed=201 + i)
            run_s = await worker_run(bench, f"steady-w{window}", events, plan.rate, window)
            r = run_s.figures
            say(f"steady {plan.rate:.0f}/s, window {window} s: {r}")
            table.append(
                {
                    "window_s": window,
                    "requests_per_payment": r["requests_per_payment"],
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "loadavg_1m": load()[0],
                }
            )
            if window == DEFAULT_WINDOW_S:
                out["e2e_p50_ms"] = r["p50_ms"]
                out["e2e_p99_ms"] = r["p99_ms"]
                out["xledger_requests_per_payment_steady"] = r["requests_per_payment"]
                latencies[f"steady {plan.rate:.0f}/s"] = run_s.latencies_ms
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
