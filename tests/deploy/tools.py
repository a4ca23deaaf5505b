"""Debian's prometheus package, for the deploy tests: promtool (the alert rules' own checker
and unit tests) and prometheus (a real scrape)."""

from __future__ import annotations

import os
import shutil

import pytest

SKIPPED: set[str] = set()  # why, for the run's summary (tests/deploy/conftest.py)


def prometheus_tool(name: str) -> str:
    """The path of promtool or prometheus (Debian's prometheus package); skipped where
    missing, and a failure in CI (FLYT_REQUIRE_PROMETHEUS=1, set by .ci/run)."""
    path = shutil.which(name)
    if path is None:
        why = f"{name} not found: apt-get install prometheus"
        if os.environ.get("FLYT_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"Prometheus tests cannot run: {why}")
        SKIPPED.add(why)
        pytest.skip(f"Prometheus tests skipped: {why}")
    return path
