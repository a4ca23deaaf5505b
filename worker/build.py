"""Which build this is: the package's version and the commit it was built from, for
`--version` and the `flyt_build_info` metric (so a dashboard shows which build each
replica runs, and a rollout is seen as it happens).

The commit comes from FLYT_BUILD_COMMIT (the image sets it at build time), else from the
git checkout the code runs from (development), else "unknown"."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE = "flyt-xledger-worker"


@cache
def build() -> tuple[str, str]:
    """(version, commit)."""
    try:
        v = version(PACKAGE)
    except PackageNotFoundError:
        v = "unknown"
    return v, os.environ.get("FLYT_BUILD_COMMIT") or _git_commit() or "unknown"


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def describe() -> str:
    v, commit = build()
    return f"flyt-xledger-worker {v} (commit {commit})"
