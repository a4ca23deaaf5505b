"""`bench --scaling`: 1 → N workers in one group on Apache Kafka with 3 brokers (issue 20).

For each worker count: the workers start, the group settles (every partition of the
payment-status topic held by exactly one worker, as each worker's log says), then the
same burst is published at once. Per run: the enrich rate (broker times of the first and
last enrich output), time to the last outcome, requests per payment; per worker: the
partitions it held, the events on them, its CPU µs per event (its whole CPU, posting
included, over the events it enriched) and its peak RSS.

What this measures on a small machine: with fewer cores than workers plus brokers, the
workers share the cores, so events/s cannot grow with workers; what must hold is that
the partitions are balanced and that CPU per event per worker stays flat (no worker does
more than its share, nothing grows with the group). Linear scaling needs a core per
worker beside the brokers'.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from worker.bench import data
from worker.bench.diagnostics import NONE, Diagnostics
from worker.bench.watch import per_second
from worker.bench.worker_runs import worker_run
from worker.bench.world import (
    DEFAULT_WINDOW_S,
    Say,
    broker,
    interrupts_as_keyboard,
    load,
    say_stderr,
    world,
)

RATE_BIN_S = 0.5


@dataclass(frozen=True)
class ScalingPlan:
    workers: tuple[int, ...] = (1, 2, 3)
    events: int = 20_000
    tenants: int = 60
    partitions: int = 6  # 1, 2 and 3 workers each hold an equal share
    brokers: int = 3
    sandbox_latency_s: float = 0.05
    registered_tenants: int = data.MUNICIPALITIES


SCALING = ScalingPlan()
SCALING_QUICK = ScalingPlan(events=10_000)
SCALING_TINY = ScalingPlan(
    workers=(1, 2), events=300, tenants=4, partitions=2, brokers=1, registered_tenants=6
)


def run_scaling(
    plan: ScalingPlan,
    broker_kind: str = "kafka",
    say: Say = say_stderr,
    series: dict[str, Any] | None = None,
    diagnostics: Diagnostics = NONE,
) -> dict[str, Any]:
    load_start = load()
    started = time.monotonic()
    out = series if series is not None else {}
    replication = min(3, plan.brokers)
    with interrupts_as_keyboard(), broker(broker_kind, say, plan.brokers) as bootstrap:
        rows = asyncio.run(_runs(plan, bootstrap, say, out, replication, diagnostics))
    return {
        "plan": "scaling",
        "broker": broker_kind,
        "brokers": plan.brokers if broker_kind == "kafka" else 1,
        "cores": os.cpu_count(),
        "scaling": rows,
        "setup": {
            "events": plan.events,
            "tenants": plan.tenants,
            "partitions": plan.partitions,
            "replication_factor": replication,
            "registered_tenants": plan.registered_tenants,
            "sandbox_latency_ms": round(plan.sandbox_latency_s * 1000),
            "window_s": DEFAULT_WINDOW_S,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        "loadavg_start": load_start,
        "loadavg_end": load(),
    }


async def _runs(
    plan: ScalingPlan,
    bootstrap: str,
    say: Say,
    series: dict[str, Any],
    replication: int,
    diagnostics: Diagnostics,
) -> list[dict[str, Any]]:
    rows = []
    series.update({"rate_bin_s": RATE_BIN_S, "enrich_per_s": {}})
    events = data.events_for(data.tenant_ids(plan.tenants), plan.events, seed=401)
    async with world(
        bootstrap, plan.registered_tenants, plan.sandbox_latency_s, say, replication, diagnostics
    ) as bench:
        for n in plan.workers:
            load_before = load()[0]
            r = await worker_run(
                bench,
                f"scale-{n}",
                events,
                None,
                DEFAULT_WINDOW_S,
                workers=n,
                partitions=plan.partitions,
            )
            f = r.figures
            per_worker = f.get("per_worker") or [
                {
                    "partitions": list(range(plan.partitions)),
                    "events": len(events),
                    "cpu_us_per_event": f["worker_cpu_us_per_event"],
                    "rss_mb": f["worker_rss_mb"],
                }
            ]
            row = {
                "workers": n,
                "enrich_events_per_s": f["enrich_events_per_s"],
                "to_last_outcome_s": f["to_last_outcome_s"],
                "requests_per_payment": f["requests_per_payment"],
                "cpu_us_per_event_all_workers": f["worker_cpu_us_per_event"],
                "partitions_per_worker": [len(w["partitions"]) for w in per_worker],
                "cpu_us_per_event_per_worker": [w["cpu_us_per_event"] for w in per_worker],
                "per_worker": per_worker,
                "p50_ms": f["p50_ms"],
                "p99_ms": f["p99_ms"],
                "loadavg_1m": [load_before, load()[0]],
            }
            series["enrich_per_s"][f"{n} worker{'s' if n > 1 else ''}"] = per_second(
                r.enrich_ms, RATE_BIN_S
            )
            say(f"scaling, {n} workers: {row}")
            rows.append(row)
    return rows
