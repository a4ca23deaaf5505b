"""`--version` says which build runs: the package's version and the commit (issue 28)."""

from __future__ import annotations

import subprocess
import sys

from tests.processes import subprocess_env


def test_version_names_the_version_and_the_commit() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env({"FLYT_BUILD_COMMIT": "abc123def456"}),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "flyt-xledger-worker 0.1.0 (commit abc123def456)"
