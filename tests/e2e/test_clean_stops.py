"""Every process a command starts, it stops: SIGTERM to `worker broker`, `worker run`,
`worker sandbox` or `worker kafka` leaves no child process, and a SIGKILLed `worker broker`
or `worker run --embedded` (`make run`) leaves no broker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.brokers import require_kafka
from tests.processes import free_port, subprocess_env
from worker.devenv.tansu import wait_for_port

pytestmark = pytest.mark.integration


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", *args],
        env=subprocess_env({}),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def kill_all(proc: subprocess.Popen[bytes], pids: list[int]) -> None:
    """Whatever the test's outcome, nothing it started outlives it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def tansu_of(proc: subprocess.Popen[bytes], seconds: float = 30) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [
            c for c in children(proc.pid) if b"tansu" in Path(f"/proc/{c}/cmdline").read_bytes()
        ]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("no Tansu child appeared")


def test_sigterm_to_worker_broker_stops_tansu(tmp_path: Path) -> None:
    port = free_port()
    proc = start(["broker", "--port", str(port)], tmp_path / "broker.log")
    try:
        wait_for_port(port)
        tansu = tansu_of(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert gone_within(tansu, 5), "Tansu outlived `worker broker`"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "args", [["broker"], ["run", "--embedded", "--metrics-port", "0"]], ids=["broker", "run"]
)
def test_a_sigkilled_command_leaves_no_broker_behind(tmp_path: Path, args: list[str]) -> None:
    if args == ["broker"]:
        args = ["broker", "--port", str(free_port())]
    proc = start(args, tmp_path / "cmd.log")
    tansu: list[int] = []
    try:
        tansu = tansu_of(proc)
        proc.kill()  # no goodbye: only the parent-death signal can stop the broker now
        proc.wait()
        assert gone_within(tansu, 5), f"Tansu outlived a SIGKILLed `worker {args[0]}`"
    finally:
        kill_all(proc, tansu)


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def ready_when(log: Path, port: int | None, text: bytes | None, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text is not None and text in log.read_bytes():
            return
        if port is not None:
            try:
                wait_for_port(port, 0.2)
                return
            except Exception:
                pass
        time.sleep(0.1)
    raise AssertionError(
        f"not ready within {seconds} s:\n{log.read_text(errors='replace')[-2000:]}"
    )


@pytest.mark.parametrize("command", ["run", "sandbox", "kafka"])
def test_sigterm_leaves_no_child_process(tmp_path: Path, command: str) -> None:
    port = free_port()
    if command == "run":
        args, wait_port, text, seconds = (
            ["run", "--embedded", "--metrics-port", "0"],
            None,
            b"worker_ready",
            90,
        )
    elif command == "sandbox":
        args = ["sandbox", "--port", str(port), "--token-dir", str(tmp_path / "tokens")]
        wait_port, text, seconds = port, None, 30
    else:
        require_kafka()
        args, wait_port, text, seconds = ["kafka", "--port", str(port)], port, None, 120
    log = tmp_path / f"{command}.log"
    proc = start(args, log)
    family: list[int] = []
    try:
        ready_when(log, wait_port, text, seconds)
        family = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text(errors="replace")[-2000:]
        left = [p for p in family if alive(p)]
        assert gone_within(family, 10), f"`worker {command}` left {left} running after SIGTERM"
        assert b"Traceback" not in log.read_bytes()
    finally:
        kill_all(proc, family)


@pytest.mark.parametrize("kind", ["tansu", "kafka"])
def test_sigterm_ends_a_worker_whose_brokers_are_all_gone_within_its_grace_period(
    tmp_path: Path, kind: str
) -> None:
    """Issue 18: as an operator would try it: the broker SIGKILLed, then SIGTERM to
    `worker run`. faust's worker was still running 60 s later; ours hands over what it can
    and leaves within FLYT_STOP_GRACE_S (10 s by default), with nothing left running."""
    port = free_port()
    if kind == "kafka":
        require_kafka()
        broker_args, wait_s = ["kafka", "--port", str(port)], 120
        env = {"FLYT_REPLICATION_FACTOR": "1", "FLYT_MIN_INSYNC_REPLICAS": "1"}
    else:
        broker_args, wait_s, env = ["broker", "--port", str(port)], 30, {}
    broker = start(broker_args, tmp_path / "broker.log")
    worker: subprocess.Popen[bytes] | None = None
    family: list[int] = []
    try:
        ready_when(tmp_path / "broker.log", port, None, wait_s)
        family = descendants(broker.pid)
        log = tmp_path / "worker.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--bootstrap", f"127.0.0.1:{port}"],
            env=subprocess_env({**env, "FLYT_METRICS_PORT": "0", "FLYT_LOG_FORMAT": "json"}),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        ready_when(log, None, b"worker_ready", 90)
        broker.kill()  # the broker is gone, and its own children with it
        broker.wait()
        assert gone_within(family, 10)
        time.sleep(1.0)
        asked = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
        took = time.monotonic() - asked
        print(f"\n{kind}: stopped {took:.1f} s after SIGTERM, its broker gone")
        assert took < 10.0 + 2.0, f"the worker took {took:.1f} s to stop"
        assert code == 0, log.read_text(errors="replace")[-2000:]
        assert b"Traceback" not in log.read_bytes()
    finally:
        if worker is not None:
            kill_all(worker, [])
        kill_all(broker, family)
