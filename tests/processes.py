"""Processes a test starts: a free port for one, an environment without the caller's FLYT_*
and XLEDGER_* settings, a stop that always ends it, and the children a test leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    from worker.devenv.tansu import free_port as fp

    return fp()


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYT_", "XLEDGER_"))}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_worker(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m worker run` to its end with `env` over a clean environment, its output
    captured as text (`timeout` only guards the test run: a worker that should have
    refused to start must not hang the suite)."""
    return subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        env=subprocess_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def children() -> set[int]:
    """The pids of this process's children now (a test that starts things compares)."""
    me = str(os.getpid())
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me:
            out.add(int(pid))
    return out
