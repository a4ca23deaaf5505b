"""The bench's other plans (`--month-start`, `--scaling`) and its report (issue 20).

Tiny runs on Tansu: every figure is there and every process the bench started is
stopped; the report's PNGs are drawn from a run's own summary and series. Speed is not
asserted (the bench reports it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.processes import children
from worker.bench.diagnostics import Diagnostics, py_spy_command
from worker.bench.month_start import (
    MONTH_START_TINY,
    MonthStartPlan,
    fees,
    growth,
    run_month_start,
)
from worker.bench.report import write_report
from worker.bench.scaling import SCALING_TINY, run_scaling

PNG = b"\x89PNG\r\n\x1a\n"


def _pngs(paths: list[Path]) -> set[str]:
    pngs = {p.name for p in paths if p.suffix == ".png"}
    for p in paths:
        assert p.exists() and p.stat().st_size > 0, p
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG, p
    return pngs


def test_month_start_events_are_all_betalt_and_spread_over_every_tenant() -> None:
    tenants = [f"t-vestfold-bv-{i:03d}" for i in range(1, 7)]
    events = fees(tenants, 600, seed=1)
    assert {e["status"] for e in events} == {"Betalt"}
    assert {e["tenant_id"] for e in events} == set(tenants)


def test_growth_compares_the_ends_of_each_axis() -> None:
    def row(events: int, tenants: int, last: float) -> dict[str, Any]:
        return {
            "events": events,
            "tenants": tenants,
            "to_last_outcome_s": last,
            "requests_per_payment": 0.01,
            "worker_rss_mb": 100.0,
        }

    rows = [row(10, 356, 2.0), row(50, 356, 9.0), row(50, 20, 6.0), row(10, 20, 1.0)]
    g = growth(rows)
    assert g["events"]["from"] == {"events": 10, "tenants": 356}
    assert g["events"]["to_last_outcome_s"] == 4.5
    assert g["tenants"]["from"] == {"events": 50, "tenants": 20}
    assert g["tenants"]["to_last_outcome_s"] == 1.5


def test_the_standard_report_draws_three_pngs_from_a_summary(tmp_path: Path) -> None:
    summary = {
        "broker": "tansu",
        "loadavg_start": [1.0, 1.0, 1.0],
        "loadavg_end": [2.0, 1.0, 1.0],
        "xledger_requests_per_payment": {"burst": 0.02, "steady": 0.03},
        "window_tradeoff": [
            {"window_s": 0.25, "requests_per_payment": 0.03, "p50_ms": 400, "p99_ms": 900},
            {"window_s": 1.0, "requests_per_payment": 0.01, "p50_ms": 900, "p99_ms": 1500},
        ],
        "setup": {"steady_rate": 500.0},
    }
    series = {
        "rate_bin_s": 0.25,
        "events_per_s": {"anchor (plain aiokafka)": [8000.0, 7000.0], "worker": [400.0] * 9},
        "latency_ms": {"burst": list(range(100, 5000, 7)), "steady 500/s": [300, 400, 900]},
    }
    paths = write_report(tmp_path / "r", summary, series)
    assert _pngs(paths) == {"latency.png", "throughput.png", "window.png"}
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == summary


@pytest.mark.integration
def test_a_tiny_month_start_on_tansu_has_every_figure_and_a_report(tmp_path: Path) -> None:
    before = children()
    series: dict[str, Any] = {}
    summary = run_month_start(MONTH_START_TINY, "tansu", say=lambda line: None, series=series)
    assert children() <= before  # broker, sandbox's and workers stopped
    rows = summary["month_start"]
    assert [(r["events"], r["tenants"]) for r in rows] == list(MONTH_START_TINY.points)
    for r in rows:
        assert r["to_last_outcome_s"] > 0 and r["worker_rss_mb"] > 0
        assert r["posted"] + r["rejected"] > 0 and r["requests_per_payment"] > 0
        # Issue 29: the floor and the two-hop anchor beside each point, in the same run.
        assert r["requests_floor_per_payment"] == round(2 * r["tenants"] / r["posted"], 4)
        assert 0 < r["lookups"] + r["mutations"] <= r["requests"]
        assert 0 <= r["last_outcome_after_last_event_s"] <= r["to_last_outcome_s"]
        assert r["two_hop_anchor_cpu_us_per_event"] > 0 and r["two_hop_anchor_events_per_s"] > 0
        assert r["cpu_ratio_two_hop"] > 0
        assert "diagnostics" not in r  # none asked for
    assert set(summary["growth"]) == {"events", "tenants"}
    assert isinstance(summary["growth"]["tenants"]["rss_flat_within_10pct"], bool)
    enrich = summary["enrich_anchor"]  # the stricter anchor, at the largest point
    assert enrich["ratio_engine_batches"] > 0 and enrich["cpu_ratio_engine_batches"] > 0
    t = summary["targets"]
    assert t["at"] == {"events": 400, "tenants": 4}
    for key in ("requests_per_payment", "worker_rss_mb", "cpu_ratio_two_hop"):
        figure, limit, met = t[key]
        assert figure > 0 and limit > 0 and isinstance(met, bool)
    json.dumps(summary)
    paths = write_report(tmp_path, summary, series)
    assert _pngs(paths) == {"month_start.png", "month_start_receipts.png"}


@pytest.mark.integration
def test_a_traced_month_start_keeps_its_logs_and_says_what_holds_memory(tmp_path: Path) -> None:
    before = children()
    logs = tmp_path / "logs"
    plan = MonthStartPlan(points=((200, 2), (200, 3)), registered_tenants=4, enrich_anchor=False)
    spy = py_spy_command() is not None  # py-spy is not a dependency: sampled where installed
    series: dict[str, Any] = {}
    summary = run_month_start(
        plan,
        "tansu",
        say=lambda line: None,
        series=series,
        diagnostics=Diagnostics(log_dir=logs, py_spy=spy, tracemalloc=True),
    )
    assert children() <= before  # py-spy stopped too
    assert {p.name for p in logs.glob("worker-*.log")} == {
        "worker-month-200-2-0.log",
        "worker-month-200-3-0.log",
    }
    small, large = summary["month_start"]
    [traced] = large["diagnostics"]["tracemalloc"]
    assert traced["traced_mb"] > 0 and traced["by_worker_frame_mb"]
    assert "sites_bytes" not in traced  # in the series, not the summary line
    assert set(series["tracemalloc_sites_bytes"]) == {"200-2", "200-3"}
    assert summary["tracemalloc_per_tenant_kb"]["to_tenants"] == 3
    if spy:  # the largest point only
        assert large["diagnostics"]["py_spy"]["samples"] > 0
        assert "py_spy" not in small.get("diagnostics", {})
    json.dumps(summary)


@pytest.mark.integration
def test_a_tiny_scaling_run_balances_partitions_and_stops_every_worker(tmp_path: Path) -> None:
    before = children()
    series: dict[str, Any] = {}
    summary = run_scaling(SCALING_TINY, "tansu", say=lambda line: None, series=series)
    assert children() <= before
    one, two = summary["scaling"]
    assert one["partitions_per_worker"] == [SCALING_TINY.partitions]
    assert two["partitions_per_worker"] == [1, 1]  # balanced: each worker one partition
    held = sorted(p for w in two["per_worker"] for p in w["partitions"])
    assert held == list(range(SCALING_TINY.partitions))
    assert sum(w["events"] for w in two["per_worker"]) == SCALING_TINY.events
    assert all(c and c > 0 for c in two["cpu_us_per_event_per_worker"])
    paths = write_report(tmp_path, summary, series)
    assert _pngs(paths) == {"scaling.png"}
