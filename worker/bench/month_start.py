"""`bench --month-start`: the day foster-care fees are paid (issue 20).

All events Betalt (the month's fees), published at once over many tenants, with all 356
tenants' registers loaded: time from the first Betalt event to the last outcome, Xledger
requests per posted payment, the worker's peak RSS and CPU per event, and Betalt →
receipt. Each point is a fresh worker; the points grow the events (10,000 → 50,000) and
the tenants (20 → 356), so the summary says how each figure grows with each.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from worker.bench import data
from worker.bench.watch import per_second
from worker.bench.world import (
    DEFAULT_WINDOW_S,
    Say,
    broker,
    interrupts_as_keyboard,
    load,
    say_stderr,
    world,
)

RATE_BIN_S = 1.0


@dataclass(frozen=True)
class MonthStartPlan:
    # (events, tenants) per point: along the events at 356 tenants, along the tenants at
    # 50,000 events.
    points: tuple[tuple[int, int], ...] = (
        (10_000, 356),
        (25_000, 356),
        (50_000, 356),
        (50_000, 20),
        (50_000, 100),
        (10_000, 20),
    )
    sandbox_latency_s: float = 0.05
    registered_tenants: int = data.MUNICIPALITIES


MONTH_START = MonthStartPlan()
MONTH_START_QUICK = MonthStartPlan(
    points=((10_000, 20), (10_000, 356), (50_000, 20), (50_000, 356))
)
MONTH_START_TINY = MonthStartPlan(points=((200, 4), (400, 4), (400, 2)), registered_tenants=6)


def fees(tenants: list[str], n: int, seed: int) -> list[dict[str, Any]]:
    """n events over `tenants`, every one Betalt (Flyt's re-sends stay, as duplicates)."""
    return [{**e, "status": "Betalt"} for e in data.events_for(tenants, n, seed=seed)]


def run_month_start(
    plan: MonthStartPlan,
    broker_kind: str,
    say: Say = say_stderr,
    series: dict[str, Any] | None = None,
) -> dict[str, Any]:
    load_start = load()
    started = time.monotonic()
    out = series if series is not None else {}
    with interrupts_as_keyboard(), broker(broker_kind, say) as bootstrap:
        points = asyncio.run(_points(plan, bootstrap, say, out))
    return {
        "plan": "month-start",
        "broker": broker_kind,
        "month_start": points,
        "growth": growth(points),
        "setup": {
            "registered_tenants": plan.registered_tenants,
            "sandbox_latency_ms": round(plan.sandbox_latency_s * 1000),
            "window_s": DEFAULT_WINDOW_S,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        "loadavg_start": load_start,
        "loadavg_end": load(),
    }


async def _points(
    plan: MonthStartPlan, bootstrap: str, say: Say, series: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    series.update({"rate_bin_s": RATE_BIN_S, "receipts_per_s": {}})
    async with world(bootstrap, plan.registered_tenants, plan.sandbox_latency_s, say) as bench:
        for i, (n, t) in enumerate(plan.points):
            events = fees(data.tenant_ids(t), n, seed=301 + i)
            load_before = load()[0]
            r = await bench.worker_run(f"month-{n}-{t}", events, None, DEFAULT_WINDOW_S)
            f = r.figures
            row = {
                "events": n,
                "tenants": t,
                "to_last_outcome_s": f["to_last_outcome_s"],
                "requests_per_payment": f["requests_per_payment"],
                "requests": f["requests"],
                "worker_rss_mb": f["worker_rss_mb"],
                "worker_cpu_us_per_event": f["worker_cpu_us_per_event"],
                "enrich_events_per_s": f["enrich_events_per_s"],
                "p50_ms": f["p50_ms"],
                "p99_ms": f["p99_ms"],
                "posted": f["posted"],
                "rejected": f["rejected"],
                "loadavg_1m": [load_before, load()[0]],
            }
            series["receipts_per_s"][f"{n:,} events, {t} tenants"] = per_second(
                r.receipt_ms, RATE_BIN_S
            )
            say(f"month start, {n} events over {t} tenants: {row}")
            rows.append(row)
    return rows


def growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How each figure grows: from the fewest to the most events at the most tenants, and
    from the fewest to the most tenants at the most events (a ratio per figure)."""
    figures = ("to_last_outcome_s", "requests_per_payment", "worker_rss_mb")

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {
            "from": {"events": a["events"], "tenants": a["tenants"]},
            "to": {"events": b["events"], "tenants": b["tenants"]},
            **{k: round(b[k] / a[k], 2) if a[k] and b[k] else None for k in figures},
        }

    out: dict[str, Any] = {}
    most_tenants = max(r["tenants"] for r in rows)
    most_events = max(r["events"] for r in rows)
    along_events = sorted((r for r in rows if r["tenants"] == most_tenants), key=_events)
    along_tenants = sorted((r for r in rows if r["events"] == most_events), key=_tenants)
    if len(along_events) > 1:
        out["events"] = ratio(along_events[0], along_events[-1])
    if len(along_tenants) > 1:
        out["tenants"] = ratio(along_tenants[0], along_tenants[-1])
    return out


def _events(row: dict[str, Any]) -> int:
    return int(row["events"])


def _tenants(row: dict[str, Any]) -> int:
    return int(row["tenants"])
