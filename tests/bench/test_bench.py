"""`python -m worker bench`: a tiny run on Tansu has every figure, and leaves no process.

Speed is not asserted here (the bench reports it); only that every figure is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.processes import children
from worker.bench.runner import TINY, run
from worker.bench.watch import CLOCK_TICK_S, cpu_between
from worker.cli import main

pytestmark = pytest.mark.integration

KEYS = {
    "broker",
    "passthrough_events_per_s",
    "enrich_events_per_s",
    "ratio",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "burst_p50_ms",
    "burst_p99_ms",
    "xledger_requests_per_payment",
    "core_us_per_event",
    "window_tradeoff",
    "snapshot_mb",
    "worker_rss_mb",
    "worker_cpu_us_per_event",
    "passthrough_cpu_us_per_event",
    "cpu_ratio",
    "ratio_engine_batches",
    "cpu_ratio_engine_batches",
    "passthrough_engine_batches_events_per_s",
    "enrich_cpu_us_per_event",
    "worker_enrich_events_per_s",
    "loadavg_start",
    "loadavg_end",
}


def test_a_tiny_run_on_tansu_measures_every_figure_and_stops_what_it_started() -> None:
    before = children()
    summary = run(TINY, "tansu", say=lambda line: None)
    assert summary.keys() >= KEYS
    assert summary["broker"] == "tansu"
    for key in ("passthrough_events_per_s", "enrich_events_per_s", "worker_cpu_us_per_event"):
        assert summary[key] > 0, key
    assert summary["e2e_p99_ms"] >= summary["e2e_p50_ms"] > 0
    assert set(summary["xledger_requests_per_payment"]) == {"burst", "steady"}
    assert all(v > 0 for v in summary["xledger_requests_per_payment"].values())
    assert summary["ratio"] > 0 and summary["cpu_ratio"] > 0  # beside the anchor, same run
    assert summary["ratio_engine_batches"] > 0 and summary["cpu_ratio_engine_batches"] > 0
    [row] = summary["window_tradeoff"]
    assert row.keys() >= {"window_s", "requests_per_payment", "p99_ms"}
    json.dumps(summary)  # the CLI prints it as one JSON line
    assert children() <= before  # broker and worker stopped


def test_an_unknown_broker_is_a_usage_error_not_a_traceback() -> None:
    result = CliRunner().invoke(main, ["bench", "--broker", "redpanda"])
    assert result.exit_code == 2
    assert "redpanda" in result.output and "Traceback" not in result.output


def test_the_bench_command_is_registered() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "worker", "bench", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--quick" in out.stdout


def test_cpu_read_within_one_clock_tick_is_one_tick_not_zero() -> None:
    """A tiny run's enrich stage can write all its outputs within one clock tick of CPU:
    /proc reads 0, and the CPU ratio divided by it."""
    samples = [(1000.0, 0.5), (1010.0, 0.5), (1020.0, 0.5)]
    assert cpu_between(samples, 1005.0, 1015.0) == CLOCK_TICK_S
    assert cpu_between([(1000.0, 0.5), (1020.0, 0.75)], 1005.0, 1015.0) == 0.25
