"""`python -m worker.bench.traced_worker run …`: the worker as `python -m worker run …`
starts it, under tracemalloc (`bench --tracemalloc`, issue 29).

A thread samples the traced memory every second and, whenever it has grown by 5 % over
the last snapshot written, writes a new one (`tracemalloc.Snapshot.dump`) to the path in
BENCH_TRACEMALLOC_OUT: the file left holds what was alive near the worker's peak. Each
snapshot holds the GIL while it is taken (about a second at a few hundred MB): a traced
worker's speed and memory are not the worker's own, only what holds its memory is.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES = 12  # deep enough to reach the worker's own frame under pydantic, json, aiokafka
GROWTH = 1.05
EVERY_S = 1.0


def _snapshots(out: Path) -> None:
    written = 0
    while True:
        time.sleep(EVERY_S)
        current, _ = tracemalloc.get_traced_memory()
        if current > written * GROWTH:
            partial = out.with_suffix(".partial")
            tracemalloc.take_snapshot().dump(str(partial))
            os.replace(partial, out)  # a reader never sees half a snapshot
            written = current


def main() -> None:
    out = Path(os.environ.pop("BENCH_TRACEMALLOC_OUT"))
    tracemalloc.start(FRAMES)
    threading.Thread(target=_snapshots, args=(out,), name="tracemalloc", daemon=True).start()
    from worker.cli import main as cli

    sys.argv = ["worker", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
