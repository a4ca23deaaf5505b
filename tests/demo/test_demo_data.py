"""The demo's own data: its tenants' snapshots pass every rule the worker holds a snapshot
to (R1–R13), so `make run` and the demo start from registers the worker accepts."""

from __future__ import annotations

from worker.core.snapshot_rules import check_snapshot
from worker.demo import demo_snapshots


def test_demo_snapshots_are_valid() -> None:
    for s in demo_snapshots():
        assert check_snapshot(s) == [], s.tenant_id
