"""Processes a test starts: a free port for one, an environment without the caller's FLYT_*
and XLEDGER_* settings, a stop that always ends it, and the children a test leaves behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def free_port() -> int:
    from worker.devenv.tansu import free_port as fp

    return fp()


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYT_", "XLEDGER_"))}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


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
