"""What a bench run can keep and look into besides its figures (issue 29): the workers'
logs (`--log-dir`), py-spy's samples of a worker (`--py-spy`) and tracemalloc in a worker
(`--tracemalloc`, `traced_worker.py`).

Both profilers cost the worker CPU (py-spy samples from its own process, on the same two
cores; tracemalloc slows every allocation and adds memory of its own): a profiled run's
figures are marked as such and are not the worker's figures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tracemalloc
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import worker
from worker.devenv.children import dies_with_parent

PY_SPY_RATE = 100  # samples per second (py-spy's default)
TOP = 15  # frames or sites per list
_OURS = Path(worker.__file__).resolve().parent  # the worker package's own files …
_BENCH = _OURS / "bench"  # … less the bench's
_ENTRY = ("cli.py", "commands.py", "__main__.py")  # under every stack: say nothing
# Frames under every task's stack (the event loop, the command line): a sample or an
# allocation with no worker frame is named by the first frame past these (its task).
_LOOP = ("asyncio/", "click/", "runpy", "threading.py", *(f"worker/{e}" for e in _ENTRY))


@dataclass(frozen=True)
class Diagnostics:
    """log_dir: keep every worker's log (and py-spy's and tracemalloc's files) there;
    py_spy: sample the plan's largest point's worker with py-spy; tracemalloc: run every
    whole worker under tracemalloc."""

    log_dir: Path | None = None
    py_spy: bool = False
    tracemalloc: bool = False


NONE = Diagnostics()


def py_spy_command() -> str | None:
    """py-spy beside this Python (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


class PySpy:
    """`py-spy record` on a running worker, raw collapsed stacks aggregated by function;
    `stop` ends it with SIGINT (py-spy then writes what it sampled)."""

    def __init__(self, pid: int, out: Path) -> None:
        command = py_spy_command()
        if command is None:
            raise RuntimeError("--py-spy needs py-spy: pip install py-spy")
        self.out = out
        self.log = out.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    command,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--function",
                    "--nonblocking",  # never pauses the worker: less cost, rare torn stacks
                    "--rate",
                    str(PY_SPY_RATE),
                    "--output",
                    str(out),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=dies_with_parent(),
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def top(self, n: int = TOP) -> dict[str, Any]:
        """The sampled frames: the share of samples each function was running in (self)
        and was on the stack in (total), the largest first."""
        if not self.out.exists():
            tail = self.log.read_text("utf-8", "replace").strip().splitlines()[-3:]
            return {"error": " | ".join(tail) or "py-spy wrote nothing"}
        return top_frames(self.out.read_text("utf-8", "replace"), n)


def top_frames(collapsed: str, n: int = TOP) -> dict[str, Any]:
    """py-spy's raw output (`frame;frame;… count` a line, the innermost frame last)."""
    own: Counter[str] = Counter()
    owner: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        k = int(count)
        samples += k
        own[frames[-1]] += k
        owner[_sample_owner(frames)] += k
        for frame in set(frames):
            if _ours(frame):
                total[frame] += k

    def pct(c: Counter[str]) -> list[list[Any]]:
        return [[f, round(100 * k / samples, 1)] for f, k in c.most_common(n)] if samples else []

    return {
        "samples": samples,
        "top_self_pct": pct(own),  # the innermost frame
        "by_worker_frame_pct": pct(owner),  # the innermost worker frame, what it calls too
        "top_total_worker_pct": pct(total),  # the worker's own frames, on the stack
    }


def _ours(frame: str) -> bool:
    """A py-spy frame (`name (path:line)`) in the worker's own code, not its entry."""
    return "(worker/" in frame and "(worker/bench/" not in frame and not _entry(frame)


def _entry(frame: str) -> bool:
    return any(f"(worker/{e}:" in frame for e in _ENTRY)


def _sample_owner(frames: list[str]) -> str:
    for frame in reversed(frames):
        if _ours(frame):
            return frame
    for frame in frames:
        if not any(loop in frame for loop in _LOOP):
            return f"(no worker frame) {frame}"
    return f"(no worker frame) {frames[-1]}"


# tracemalloc: which code's allocations are alive at the worker's peak.


def held_by(snapshot_path: Path, n: int = TOP) -> dict[str, Any]:
    """A traced worker's snapshot (`traced_worker.py`), its live bytes grouped by the
    innermost frame in the worker's own code (what our code allocated and still holds,
    whether through pydantic, json or aiokafka), and by the allocating line itself."""
    snap = tracemalloc.Snapshot.load(str(snapshot_path))
    ours: Counter[str] = Counter()
    for stat in snap.statistics("traceback"):
        ours[site_of(stat.traceback)] += stat.size
    lines = snap.statistics("lineno")
    total = sum(s.size for s in lines)
    return {
        "traced_mb": round(total / 1e6, 1),
        "by_worker_frame_mb": [[site, round(b / 1e6, 2)] for site, b in ours.most_common(n)],
        "by_line_mb": [[_frame(s.traceback[0]), round(s.size / 1e6, 2)] for s in lines[:n]],
        "sites_bytes": dict(ours.most_common(200)),  # for per-tenant differences
    }


def per_tenant(
    few: dict[str, Any], many: dict[str, Any], tenants: tuple[int, int], n: int = TOP
) -> list[list[Any]]:
    """Bytes per added tenant by site, between two points with the same events and
    `tenants` (fewer, more) active tenants: what grows with the tenants."""
    a, b = few["sites_bytes"], many["sites_bytes"]
    added = tenants[1] - tenants[0]
    grown = Counter({site: b.get(site, 0) - a.get(site, 0) for site in {*a, *b}})
    return [[site, round(d / added / 1e3, 1)] for site, d in grown.most_common(n) if d > 0]


def site_of(tb: tracemalloc.Traceback) -> str:
    """The worker's line that an allocation is counted at: its innermost frame in the
    worker's code (what our code allocated, through pydantic, json or aiokafka)."""
    frames = list(tb)  # the oldest first (tracemalloc's order), the 12 most recent
    if any(f.filename.startswith("<frozen importlib") for f in frames):
        return "(imports: modules, classes, constants)"
    for frame in reversed(frames):
        path = Path(frame.filename)
        if (
            path.is_relative_to(_OURS)
            and not path.is_relative_to(_BENCH)
            and not (path.parent == _OURS and path.name in _ENTRY)
        ):
            return _frame(frame)
    past_loop = [f for f in frames if not any(loop in f.filename for loop in _LOOP)]
    return f"(no worker frame) {_frame((past_loop or frames)[0])}"


def _frame(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    with contextlib.suppress(ValueError):
        name = str(Path(name).relative_to(_OURS.parent))
    if "site-packages" in name:
        name = name.split("site-packages" + os.sep, 1)[1]
    return f"{name}:{frame.lineno}"
