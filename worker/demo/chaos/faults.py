"""The campaign's fault injection: worker kills spread over the feed, every other one right
after Xledger stored a batch and before its answer left (the worker that sent it, found by
its socket: between a post and its commit), and, on Apache Kafka with three brokers,
broker kills. The sandbox's own faults (its profile) come on top."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from dataclasses import dataclass
from typing import Any

from worker.demo.chaos.options import ChaosOptions
from worker.demo.chaos.transcript import say
from worker.demo.chaos.workers import Worker, Workers
from worker.devenv.sandbox import StoredBatch
from worker.devenv.sockets import sender_of

BROKER_DOWN_S = 10.0  # longer than the brokers' session (6 s): the killed one is fenced
POST_KILL_WAIT_S = 15.0  # a kill armed for the next post falls back to a random one


@dataclass
class Kill:
    what: str
    at: float  # wall clock, s (receipts carry the broker's wall-clock time)
    tenant: str | None = None  # the tenant whose batch was just stored (between post and commit)
    worker: Worker | None = None


class Faults:
    """The kills of one campaign, in the order they happened."""

    def __init__(self, o: ChaosOptions, workers: Workers) -> None:
        self.o = o
        self.workers = workers
        self.rng = random.Random(o.seed)
        self.kills: list[Kill] = []
        self.broker_kills: list[Kill] = []
        self._armed: asyncio.Future[Kill] | None = None

    def on_stored(self, batch: StoredBatch) -> None:
        """The sandbox's hook, right after it stored a batch and before its answer leaves:
        an armed kill SIGKILLs the worker that sent it (found by its socket)."""
        armed = self._armed
        if armed is None or armed.done():
            return
        pids = [w.proc.pid for w in self.workers.alive() if w.proc is not None]
        pid = sender_of(batch.peer_port, pids)
        w = self.workers.by_pid(pid) if pid else None
        if w is None:
            return  # not found (the socket is gone already): wait for the next batch
        self.workers.kill(w)
        what = (
            f"worker {w.n} (pid {pid}) right after Xledger stored {batch.lines} lines "
            f"for {batch.tenant}"
        )
        armed.set_result(Kill(what, time.time(), batch.tenant, w))

    async def kill_workers(self, t0: float, feed_s: float) -> None:
        """`o.kills` kills over the feed, every other one after a post."""
        kinds = [i % 2 == 0 for i in range(self.o.kills)]
        for moment, after_post in zip(
            self._moments(self.o.kills, 0.1 * feed_s, 0.85 * feed_s), kinds, strict=True
        ):
            await asyncio.sleep(max(0.0, t0 + moment - time.monotonic()))
            await self._kill_worker(after_post)

    async def kill_brokers(
        self, t0: float, feed_s: float, cluster: Any, pool: concurrent.futures.Executor
    ) -> None:
        """`o.broker_kills` broker kills over the middle of the feed."""
        for moment in self._moments(self.o.broker_kills, 0.2 * feed_s, 0.6 * feed_s):
            await asyncio.sleep(max(0.0, t0 + moment - time.monotonic()))
            await self._kill_broker(cluster, pool)

    async def _kill_worker(self, after_post: bool) -> None:
        kill: Kill | None = None
        if after_post:
            self._armed = asyncio.get_running_loop().create_future()
            try:
                kill = await asyncio.wait_for(asyncio.shield(self._armed), POST_KILL_WAIT_S)
            except TimeoutError:
                say(f"no batch stored within {POST_KILL_WAIT_S:.0f} s: a random kill instead")
            finally:
                self._armed = None
        if kill is None:
            alive = self.workers.alive()
            if not alive:
                return
            w = self.rng.choice(alive)
            assert w.proc is not None
            pid = w.proc.pid
            self.workers.kill(w)
            kill = Kill(f"worker {w.n} (pid {pid}) at a random moment", time.time(), None, w)
        self.kills.append(kill)
        say(f"kill {len(self.kills)}/{self.o.kills}: SIGKILL {kill.what}")
        victim = kill.worker
        assert victim is not None and victim.proc is not None
        while victim.proc.poll() is None:  # SIGKILL: gone within moments
            await asyncio.sleep(0.01)
        self.workers.start(victim)  # at once, as a supervisor (Kubernetes) would
        say(f"worker {victim.n} restarted (pid {victim.proc.pid})")

    async def _kill_broker(self, cluster: Any, pool: concurrent.futures.Executor) -> None:
        loop = asyncio.get_running_loop()
        i = self.rng.randint(1, cluster.n)
        await loop.run_in_executor(pool, cluster.kill, i)
        kill = Kill(f"Kafka broker {i}", time.time())
        self.broker_kills.append(kill)
        say(f"broker kill {len(self.broker_kills)}/{self.o.broker_kills}: SIGKILL {kill.what}")
        await asyncio.sleep(BROKER_DOWN_S)
        started = time.monotonic()
        await loop.run_in_executor(pool, cluster.restart, i)
        say(f"Kafka broker {i} back after {time.monotonic() - started:.1f} s of restart")

    def _moments(self, n: int, start: float, length: float) -> list[float]:
        """n moments spread over [start, start+length]: one in each of n equal slots."""
        slot = length / max(n, 1)
        return [start + slot * (i + self.rng.uniform(0.15, 0.85)) for i in range(n)]
