"""`make stress`: the restart and two-worker tests, many times, under CPU load (issue 14).

Runs `pytest -k EXPR` RUNS times, PARALLEL at once, beside LOAD busy processes, and keeps
each run's output and worker logs under OUT/run-NNN (pytest's --basetemp). The runs use a
clone of the last commit (OUT/tree), so editing the checkout meanwhile changes nothing.
Stops at the first failure unless --keep-going. Prints one line per run and a summary;
exits 1 if any run failed.

    python tests/e2e/stress.py --runs 50 --parallel 2 --load 2 -k "restart or two_workers"
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path


def burn(stop_at: float) -> None:
    x = 0
    while time.monotonic() < stop_at:
        x = (x * 31 + 7) % 1_000_003


def one_run(i: int, out: Path, expr: str, tree: Path) -> tuple[int, bool, float]:
    base = out / f"run-{i:03d}"
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with (base / "pytest.log").open("wb") as log:
        rc = subprocess.call(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-x",
                "-p",
                "no:cacheprovider",
                "tests/e2e/test_stream_integration.py",
                "-k",
                expr,
                "--basetemp",
                str(base / "tmp"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tree,
        )
    return i, rc == 0, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--load", type=int, default=2, help="busy processes beside the runs")
    ap.add_argument("-k", dest="expr", default="restart or two_workers")
    ap.add_argument("--out", type=Path, default=Path("stress-runs"))
    ap.add_argument("--keep-going", action="store_true")
    args = ap.parse_args()
    args.out = args.out.resolve()
    tree = args.out / "tree"
    if not tree.exists():
        repo = Path(__file__).resolve().parents[2]
        subprocess.check_call(["git", "clone", "-q", str(repo), str(tree)])
    head = subprocess.check_output(["git", "-C", str(tree), "log", "-1", "--oneline"], text=True)
    print(f"testing {head.strip()}", flush=True)
    burners = [
        multiprocessing.Process(target=burn, args=(time.monotonic() + 6 * 3600,), daemon=True)
        for _ in range(args.load)
    ]
    for b in burners:
        b.start()
    failed: list[int] = []
    done = 0
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(args.parallel) as pool:
            pending: set[Future[tuple[int, bool, float]]] = set()
            next_run = 1
            while next_run <= args.runs or pending:
                while (
                    next_run <= args.runs
                    and len(pending) < args.parallel
                    and not (failed and not args.keep_going)
                ):
                    pending.add(pool.submit(one_run, next_run, args.out, args.expr, tree))
                    next_run += 1
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    i, ok, seconds = f.result()
                    done += 1
                    if not ok:
                        failed.append(i)
                    status = "passed" if ok else f"FAILED (see {args.out}/run-{i:03d})"
                    print(f"run {i:3d}: {status} in {seconds:.0f} s", flush=True)
    finally:
        for b in burners:
            b.terminate()
    minutes = (time.monotonic() - started) / 60
    print(
        f"{done} run(s) of -k {args.expr!r} under {args.load} busy process(es): "
        f"{done - len(failed)} passed, {len(failed)} failed in {minutes:.1f} min"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
