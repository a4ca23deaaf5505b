"""The campaign's worker processes: W `python -m worker run --bootstrap …`, each with its own
log, started as an operator starts them, SIGKILLed when the campaign says, and restarted
at once when one exits by itself (as Kubernetes would; reported, as it should not happen)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from worker.config import Settings
from worker.demo.chaos.options import CampaignAborted
from worker.demo.chaos.transcript import say
from worker.devenv.children import dies_with_parent
from worker.devenv.tansu import free_port

SETTINGS_REFUSED = 78  # `worker run`'s exit status for settings that cannot work


def last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1] if lines else "(no output)"


@dataclass
class Worker:
    n: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0
    killed: bool = False  # by the campaign: its exit is expected


class Workers:
    """W `python -m worker run --bootstrap …` processes, each with its own log file."""

    def __init__(self, n: int, bootstrap: str, env: dict[str, str], folder: Path) -> None:
        self.bootstrap = bootstrap
        self.env = env
        self.all = [Worker(i, folder / f"worker-{i}.log") for i in range(n)]
        self.unexpected_exits: list[str] = []

    def start(self, w: Worker) -> None:
        w.port = free_port()
        w.starts += 1
        w.killed = False
        env = {**self.env, "FLYT_METRICS_PORT": str(w.port)}
        with w.log.open("ab") as log:
            log.write(f"\n=== chaos: start #{w.starts} at {time.strftime('%X')} ===\n".encode())
            log.flush()
            # Its own session: a Ctrl-C at the terminal reaches the campaign only, which
            # stops the workers itself; and a killed campaign takes them with it.
            w.proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "run", "--bootstrap", self.bootstrap],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=dies_with_parent(),
            )

    def alive(self) -> list[Worker]:
        return [w for w in self.all if w.proc is not None and w.proc.poll() is None]

    def by_pid(self, pid: int) -> Worker | None:
        return next((w for w in self.alive() if w.proc and w.proc.pid == pid), None)

    def kill(self, w: Worker) -> None:
        """SIGKILL: no goodbye, no flush, no commit."""
        assert w.proc is not None
        w.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.proc.pid, signal.SIGKILL)

    def restart_crashed(self) -> None:
        """Start again every worker that exited unbidden (as its supervisor would), and
        say so: a worker should never exit by itself. Killed ones the killer restarts."""
        for w in self.all:
            if w.proc is None or w.killed or w.proc.poll() is None:
                continue
            if w.proc.returncode == SETTINGS_REFUSED:  # a restart cannot help
                raise CampaignAborted(f"worker {w.n} refused its settings: {last_line(w.log)}")
            self.unexpected_exits.append(f"worker {w.n} exited with code {w.proc.returncode}")
            say(f"worker {w.n} exited by itself (code {w.proc.returncode}): see {w.log}")
            self.start(w)

    async def supervise(self) -> None:
        """A worker that exits unbidden is restarted, and reported: until cancelled."""
        while True:
            await asyncio.sleep(0.5)
            self.restart_crashed()

    async def ready(self, timeout_s: float) -> bool:
        """Until every worker's /ready answers 200 (CampaignAborted if one refuses its
        settings)."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                self.restart_crashed()
                answers = []
                for w in self.all:
                    try:
                        r = await http.get(f"http://127.0.0.1:{w.port}/ready", timeout=1)
                        answers.append(r.status_code == 200)
                    except httpx.HTTPError:
                        answers.append(False)
                if all(answers):
                    return True
                await asyncio.sleep(0.5)
        return False

    def stop(self) -> None:
        """SIGTERM to all, then SIGKILL what is left after 15 s."""
        running = self.alive()
        for w in running:
            assert w.proc is not None
            with contextlib.suppress(ProcessLookupError):
                w.proc.terminate()
        deadline = time.monotonic() + 15
        for w in running:
            assert w.proc is not None
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()


def worker_env(s: Settings, sandbox_url: str, token_dir: Path) -> dict[str, str]:
    """The environment an operator gives a worker: FLYT_* settings, a token folder."""
    p = s.profile()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYT_", "XLEDGER_"))}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "FLYT_APP_ID": s.app_id,
            "FLYT_BROKER_KIND": p.kind,
            "FLYT_REPLICATION_FACTOR": str(p.replication_factor),
            "FLYT_MIN_INSYNC_REPLICAS": str(p.min_insync_replicas),
            "FLYT_SESSION_TIMEOUT_S": str(p.session_timeout_s),
            "FLYT_HEARTBEAT_INTERVAL_S": str(p.heartbeat_interval_s),
            "FLYT_REBALANCE_TIMEOUT_S": str(p.rebalance_timeout_s),
            "FLYT_PARTITIONS": str(s.partitions),
            "FLYT_SANDBOX": "1",
            "FLYT_XLEDGER_ENDPOINT": sandbox_url,
            "XLEDGER_TOKEN_DIR": str(token_dir),
        }
    )
    return env
