"""The worker under test as a child process: `python -m worker run --bootstrap …`, exactly
as production starts it, so its CPU and memory are its own and not the bench's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from worker.config import Topics, topic_variables
from worker.devenv.children import dies_with_parent
from worker.devenv.tansu import free_port


class WorkerProcess:
    def __init__(
        self,
        bootstrap: str,
        *,
        app_id: str,
        topics: Topics,
        sandbox_url: str,
        tokens: dict[str, str],
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        module: str = "worker",
    ) -> None:
        self.bootstrap = bootstrap
        self.module = module  # `worker.bench.traced_worker`: the same, under tracemalloc
        self.log_path = log_path
        self.metrics_port = free_port()  # for /ready (worker/health.py), at any log level
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYT_", "XLEDGER_"))}
        env.update(tokens)
        env.update(
            {
                "FLYT_APP_ID": app_id,
                "FLYT_SANDBOX": "1",
                "FLYT_XLEDGER_ENDPOINT": sandbox_url,
                # One development broker: one copy of everything.
                "FLYT_REPLICATION_FACTOR": "1",
                "FLYT_MIN_INSYNC_REPLICAS": "1",
                "FLYT_LOG_LEVEL": "INFO",  # production's level: its log lines are a real cost
            }
        )
        env.update(topic_variables(topics))
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Call from the thread that lives as long as the worker (it dies with it)."""
        out = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    self.module,
                    "run",
                    "--bootstrap",
                    self.bootstrap,
                    "--metrics-port",
                    str(self.metrics_port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=dies_with_parent(),
            )
        finally:
            out.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    async def ready(self, timeout_s: float = 180.0) -> None:
        """Until the worker's /ready says so (registers read, partitions assigned)."""
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.metrics_port}/ready"
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the worker exited ({self.proc.returncode}): {self.tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the worker was not ready in {timeout_s:.0f} s: {self.tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def peak_rss_mb(self) -> float:
        """The worker's peak resident memory so far (VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def cpu_s(self) -> float:
        """CPU seconds the worker has used so far (user + system): unlike wall time, this
        holds up when other processes share the cores."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text("utf-8", "replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM (the worker's clean stop), SIGKILL after 30 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
