"""The demo tenants' register snapshots, shipped as JSON beside this module."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

DEMO_TENANTS = ("t-vestfold-bv", "t-lillevik", "t-fjordby-test")


def demo_snapshot_dicts() -> list[dict[str, Any]]:
    root = resources.files("worker.demo")
    return [json.loads((root / f"{t}.json").read_text("utf-8")) for t in DEMO_TENANTS]


def demo_snapshots() -> list[Any]:
    from worker.contracts import RegisterSnapshot

    return [RegisterSnapshot.model_validate(d) for d in demo_snapshot_dicts()]
