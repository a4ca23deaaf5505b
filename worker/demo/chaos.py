"""`python -m worker chaos`: the reliability campaign (issue 10, R14).

A broker, the Xledger sandbox with a fault profile, and W worker processes deployed as an
operator deploys them (`python -m worker run --bootstrap …`, tokens from files in
`XLEDGER_TOKEN_DIR`, settings from `FLYT_*` variables). Demo events, with unreadable lines
among them, flow at a steady pace while workers are SIGKILLed and restarted (some right
after Xledger stored a batch and before the worker heard of it: between a post and its
commit) and, on a three-broker Apache Kafka cluster, a broker is killed and restarted.
Once the flow is quiet, the ledger is read back from the sandbox itself and checked
against R14 (one outcome per Betalt payment) and R18 (two balanced lines, external
identifiers unique).

A test harness, not production code (production never imports `worker.demo`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx

from worker.config import Settings
from worker.demo.events import bad_event_lines, generate_events
from worker.demo.harness import fit_to_cluster
from worker.demo.registers import demo_snapshot_dicts, demo_snapshots
from worker.demo.watcher import OutcomeWatcher
from worker.devenv.children import dies_with_parent
from worker.devenv.feed import producer, publish, snapshot_records
from worker.devenv.sandbox import PROFILES, XledgerSandbox, entity_from_snapshot
from worker.devenv.tansu import EmbeddedBroker, free_port
from worker.engine.kafka import BrokerError
from worker.engine.lag import group_positions
from worker.engine.topics import ensure_topics
from worker.pipeline.topics import topic_specs

Key = tuple[str, str]  # (tenant_id, payment_id)

REFUSED_REASON = "XLEDGER_REFUSED"  # the rejection an Xledger refusal of content becomes
REFUSED_DLQ = "refused"  # the DLQ reason that, before issue 10, came with that rejection
QUIET_S = 90.0  # no new outcome this long after the feed and the kills: the flow is over
BROKER_DOWN_S = 10.0  # longer than the brokers' session (6 s): the killed one is fenced
POST_KILL_WAIT_S = 15.0  # a kill armed for the next post falls back to a random one
APP_ID = "flyt-xledger-chaos"


class ChaosUsageError(ValueError):
    """Options that cannot make a campaign; the message says why, in one line."""


@dataclass(frozen=True)
class ChaosOptions:
    events: int = 3000
    kills: int = 5
    workers: int = 2
    broker: str = "tansu"  # or "kafka"
    broker_kills: int = 0
    profile: str = "mixed"
    ledger_out: Path | None = None
    seed: int = 2026
    rate: float = 50.0  # events per second
    bad: int | None = None  # unreadable lines; default 1 per 100 events
    log_dir: Path | None = None  # kept; by default a temporary folder, kept on failure
    timeout_s: float = 1200.0

    def check(self) -> None:
        if self.broker not in ("tansu", "kafka"):
            raise ChaosUsageError(f"--broker must be tansu or kafka, not {self.broker!r}")
        if self.broker == "tansu" and self.broker_kills > 0:
            raise ChaosUsageError(
                "--broker-kills needs --broker kafka: the embedded Tansu broker keeps "
                "everything in memory, so a killed one restarts empty (no durability to test)"
            )
        if self.profile not in PROFILES:
            raise ChaosUsageError(
                f"unknown fault profile {self.profile!r}; valid: {', '.join(PROFILES)}"
            )
        if self.workers < 1:
            raise ChaosUsageError("--workers must be at least 1")
        if self.events < 1:
            raise ChaosUsageError("--events must be at least 1")

    @property
    def n_bad(self) -> int:
        return self.events // 100 if self.bad is None else self.bad


_TRANSCRIPT: list[Path] = []  # the campaign's own log, beside the workers' (run_campaign)


def say(message: str) -> None:
    """A progress line for the person watching (stderr; stdout carries the JSON), kept in
    the logs' folder too, where a failure's evidence is read later."""
    print(f"chaos: {message}", file=sys.stderr, flush=True)
    note(message)


def note(message: str) -> None:
    """A line for the campaign's log only: evidence, too detailed to watch."""
    for path in _TRANSCRIPT:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%X')} {message}\n")


# --- the R14 checker (pure) --------------------------------------------------------------


@dataclass
class Verdict:
    """Every Betalt payment's one outcome, and every way R14 or R18 is broken."""

    posted: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    lost: list[str] = field(default_factory=list)
    lost_keys: list[Key] = field(default_factory=list)
    double_posted: list[str] = field(default_factory=list)
    # Two outcomes, neither a posting (rejected and dead-lettered): R14 says exactly one.
    conflicting: list[str] = field(default_factory=list)
    # R18: a voucher that is not two balanced lines, or lines of no Betalt payment.
    ledger_problems: list[str] = field(default_factory=list)
    # An outcome the core would not give (a payment it rejects posted, or one it posts
    # rejected for another reason than an Xledger refusal).
    unexpected: list[str] = field(default_factory=list)
    posted_without_receipt: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.double_posted
            or self.conflicting
            or self.ledger_problems
            or self.unexpected
        )


def _payment_of(ext_id: Any) -> tuple[Key, str] | None:
    """`flyt:{tenant}:{payment}:{n}` → ((tenant, payment), n) (contracts.md, R18)."""
    if not isinstance(ext_id, str):
        return None
    parts = ext_id.split(":")
    if len(parts) != 4 or parts[0] != "flyt":
        return None
    return (parts[1], parts[2]), parts[3]


def check_r14(
    betalt: set[Key],
    core_rejects: set[Key],
    receipts: Mapping[Key, int],
    rejections: Mapping[Key, list[str]],
    dead_letters: Mapping[Key, list[str]],
    ledger: list[dict[str, Any]],
) -> Verdict:
    """R14 over one campaign: each Betalt payment ends posted once, rejected, or
    dead-lettered, and in only one of them. Xledger's ledger is the truth for "posted"
    (a receipt without ledger lines posted nothing); the topics are the truth for the
    other two. A rejection with `XLEDGER_REFUSED` and a DLQ record with reason `refused`
    are one outcome, rejected (the worker wrote both before issue 10)."""
    v = Verdict()
    lines: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    ext_ids = Counter(line.get("extIdentifier") for line in ledger)
    for line in ledger:
        parsed = _payment_of(line.get("extIdentifier"))
        if parsed is None or parsed[0] not in betalt:
            v.ledger_problems.append(f"line {line.get('dbId')}: {line.get('extIdentifier')!r}")
            continue
        lines[parsed[0]].append(line)
    for key in sorted(betalt):
        name = f"{key[0]} {key[1]}"
        held = lines.get(key, [])
        dlq = dead_letters.get(key, [])
        outcomes = set()
        if held:
            outcomes.add("posted")
        if rejections.get(key) or REFUSED_DLQ in dlq:
            outcomes.add("rejected")
        if any(reason != REFUSED_DLQ for reason in dlq):
            outcomes.add("dead_lettered")
        if not outcomes:
            why = "a receipt, but no line in Xledger" if receipts.get(key) else "no outcome"
            v.lost.append(f"{name}: {why}")
            v.lost_keys.append(key)
            continue
        twice = sorted({x["extIdentifier"] for x in held if ext_ids[x["extIdentifier"]] > 1})
        if twice:
            v.double_posted.append(f"{name}: in the ledger twice: {', '.join(twice)}")
        elif "posted" in outcomes and len(outcomes) > 1:
            others = " and ".join(sorted(outcomes - {"posted"}))
            v.double_posted.append(f"{name}: posted and {others} ({', '.join(dlq)})")
        elif (receipts.get(key) or 0) and "dead_lettered" in outcomes:
            v.double_posted.append(f"{name}: a receipt and a DLQ record ({', '.join(dlq)})")
        elif len(outcomes) > 1:
            v.conflicting.append(f"{name}: {' and '.join(sorted(outcomes))} ({', '.join(dlq)})")
        if held:
            v.posted += 1
            if not receipts.get(key):
                v.posted_without_receipt += 1
            problem = _voucher_problem(key, held)
            if problem:
                v.ledger_problems.append(f"{name}: {problem}")
            if key in core_rejects:
                v.unexpected.append(f"{name}: posted, but the core rejects it")
        elif "rejected" in outcomes:
            v.rejected += 1
            other = [r for r in rejections.get(key, []) if r != REFUSED_REASON]
            if key not in core_rejects and other:
                v.unexpected.append(f"{name}: rejected ({', '.join(other)}), the core posts it")
        else:
            v.dead_lettered += 1
    return v


def _voucher_problem(key: Key, held: list[dict[str, Any]]) -> str | None:
    """R18: the expense line (n=1) and the counter line (n=2), summing to zero."""
    ns = sorted(str((_payment_of(x["extIdentifier"]) or (key, "?"))[1]) for x in held)
    if len(held) != 2 or ns != ["1", "2"]:
        return f"{len(held)} line(s) {ns}, not the two lines 1 and 2"
    try:
        total = sum(Decimal(str(x.get("amount"))) for x in held)
    except InvalidOperation:
        return "an amount that is not a number"
    return None if total == 0 else f"unbalanced: the lines sum to {total}"


def expected_outcomes(
    snapshots: list[dict[str, Any]], events: list[dict[str, Any]]
) -> tuple[set[Key], set[Key]]:
    """(submitted, rejected) Betalt payments as the pure core decides them offline."""
    from worker.contracts import RegisterSnapshot
    from worker.core.register_book import RegisterBook
    from worker.offline import enrich_lines

    book = RegisterBook()
    for snap in sorted(snapshots, key=lambda d: (d["tenant_id"], d["version"])):
        book.offer(RegisterSnapshot.model_validate(snap))
    submitted: set[Key] = set()
    rejected: set[Key] = set()
    for out in enrich_lines([json.dumps(e) for e in events], book):
        key = (out["tenant_id"], out["payment_id"])
        if out["outcome"] == "submission":
            submitted.add(key)
        elif out["outcome"] == "rejection":
            rejected.add(key)
    return submitted, rejected


# --- reading the outcomes back -------------------------------------------------------------


class CampaignWatcher(OutcomeWatcher):
    """OutcomeWatcher's reading, plus what R14 needs per payment: how many receipts, which
    rejection and DLQ reasons; the receipts' times (recovery); and the dead letters of
    records that are no payment (the unreadable lines), by their original position."""

    def __init__(self, bootstrap: str, s: Settings) -> None:
        super().__init__(bootstrap, s)
        self.receipts: Counter[Key] = Counter()
        self.rejections: dict[Key, list[str]] = defaultdict(list)
        self.payment_dead_letters: dict[Key, list[str]] = defaultdict(list)
        # (original topic, partition, offset) → the payment the record names, if any
        self.dead_letter_origins: dict[tuple[str, str, str], Key | None] = {}
        self.dead_letter_records = 0
        self.receipt_times: list[tuple[float, str]] = []  # (broker time in s, tenant)
        self.last_outcome = time.monotonic()

    async def poll(self) -> None:
        t = self.s.topics
        batches = await self.reader.poll(0.2)
        for tp, records in batches.items():
            for r in records:
                where = f"{tp.topic}:{tp.partition}@{r.offset}"
                if tp.topic == t.payments:
                    self._note_betalt(r.value, r.timestamp_ms, where)
                    continue
                self.last_outcome = time.monotonic()
                if tp.topic == t.submissions:
                    key = _key(r.value)
                    if key:
                        self.positions.setdefault(key, []).append(where)
                elif tp.topic == t.receipts:
                    key = _key(r.value)
                    if key:
                        self.receipts[key] += 1
                        self.receipt_ms.setdefault(key, r.timestamp_ms)
                        self.receipt_times.append((r.timestamp_ms / 1000, key[0]))
                        self.posted.add(key)
                elif tp.topic == t.rejections:
                    key = _key(r.value)
                    if key:
                        self.rejections[key].append(str(json.loads(r.value or b"{}").get("reason")))
                        self.rejected.add(key)
                elif tp.topic == t.dlq:
                    self._note_dead_letter(r.key, r.value, r.headers)

    def _note_dead_letter(self, key: bytes | None, value: bytes | None, headers: Any) -> None:
        h = {k: v.decode("utf-8", "replace") for k, v in (headers or [])}
        reason = h.get("dlq.reason", "?")
        if reason != REFUSED_DLQ:
            self.dead_lettered += 1
        payment = _key(value)
        if payment:
            self.payment_dead_letters[payment].append(reason)
        origin = (
            h.get("dlq.original_topic", "?"),
            h.get("dlq.original_partition", "?"),
            h.get("dlq.original_offset", "?"),
        )
        self.dead_letter_origins[origin] = payment
        self.dead_letter_records += 1

    def unreadable_dead_lettered(self, betalt: set[Key]) -> int:
        """Dead-lettered input records that are no Betalt payment (the bad lines), each
        counted once however often it was dead-lettered (a kill may repeat one)."""
        return sum(1 for key in self.dead_letter_origins.values() if key not in betalt)


def _key(value: bytes | None) -> Key | None:
    """(tenant_id, payment_id) of a JSON record that names both, else None."""
    try:
        body = json.loads(value or b"")
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    tenant, payment = body.get("tenant_id"), body.get("payment_id")
    return (tenant, payment) if isinstance(tenant, str) and isinstance(payment, str) else None


# --- the sandbox, watched: its on_stored hook tells the client's port -----------------------


def _socket_inode(local_port: int) -> str | None:
    """The inode of the loopback TCP socket bound to this local port (Linux /proc)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == local_port:
                return cols[9]
    return None


def _owner(pids: Iterable[int], inode: str) -> int | None:
    """Which of these processes holds the socket."""
    target = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
    return None


# --- the workers ---------------------------------------------------------------------------


@dataclass
class _Worker:
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
        self.all = [_Worker(i, folder / f"worker-{i}.log") for i in range(n)]
        self.unexpected_exits: list[str] = []

    def start(self, w: _Worker) -> None:
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

    def alive(self) -> list[_Worker]:
        return [w for w in self.all if w.proc is not None and w.proc.poll() is None]

    def by_pid(self, pid: int) -> _Worker | None:
        return next((w for w in self.alive() if w.proc and w.proc.pid == pid), None)

    def kill(self, w: _Worker) -> None:
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
            self.unexpected_exits.append(f"worker {w.n} exited with code {w.proc.returncode}")
            say(f"worker {w.n} exited by itself (code {w.proc.returncode}): see {w.log}")
            self.start(w)

    async def ready(self, timeout_s: float) -> bool:
        """Until every worker's /ready answers 200."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
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


# --- the campaign --------------------------------------------------------------------------


@dataclass
class Kill:
    what: str
    at: float  # wall clock, s (receipts carry the broker's wall-clock time)
    tenant: str | None = None  # the tenant whose batch was just stored (between post and commit)
    worker: _Worker | None = None


class Campaign:
    def __init__(self, o: ChaosOptions, folder: Path) -> None:
        self.o = o
        self.folder = folder
        self.rng = random.Random(o.seed)
        self.kills: list[Kill] = []
        self.broker_kills: list[Kill] = []
        self.fed = 0
        self.feed_done = asyncio.Event()
        self.workers: Workers | None = None
        self.sandbox: XledgerSandbox | None = None
        self._armed: asyncio.Future[Kill] | None = None
        self.busy = False  # kills still to come
        self.tasks: list[asyncio.Task[Any]] = []

    # - kills -

    def _on_store(self, peer_port: int | None, tenant: str, lines: int) -> None:
        """In the sandbox's handler, right after it stored a batch and before its answer
        leaves: an armed kill SIGKILLs the worker that sent it (found by its socket)."""
        armed, workers = self._armed, self.workers
        if armed is None or armed.done() or workers is None or peer_port is None:
            return
        inode = _socket_inode(peer_port)
        pids = [w.proc.pid for w in workers.alive() if w.proc is not None]
        pid = _owner(pids, inode) if inode else None
        w = workers.by_pid(pid) if pid else None
        if w is None:
            return  # not found (the socket is gone already): wait for the next batch
        workers.kill(w)
        what = f"worker {w.n} (pid {pid}) right after Xledger stored {lines} lines for {tenant}"
        armed.set_result(Kill(what, time.time(), tenant, w))

    async def _kill_worker(self, after_post: bool) -> None:
        workers = self.workers
        assert workers is not None
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
            alive = workers.alive()
            if not alive:
                return
            w = self.rng.choice(alive)
            assert w.proc is not None
            pid = w.proc.pid
            workers.kill(w)
            kill = Kill(f"worker {w.n} (pid {pid}) at a random moment", time.time(), None, w)
        self.kills.append(kill)
        say(f"kill {len(self.kills)}/{self.o.kills}: SIGKILL {kill.what}")
        victim = kill.worker
        assert victim is not None and victim.proc is not None
        while victim.proc.poll() is None:  # SIGKILL: gone within moments
            await asyncio.sleep(0.01)
        workers.start(victim)  # at once, as a supervisor (Kubernetes) would
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

    async def _worker_kills(self, t0: float, feed_s: float) -> None:
        kinds = [i % 2 == 0 for i in range(self.o.kills)]  # every other one after a post
        for moment, after_post in zip(
            self._moments(self.o.kills, 0.1 * feed_s, 0.85 * feed_s), kinds, strict=True
        ):
            await asyncio.sleep(max(0.0, t0 + moment - time.monotonic()))
            await self._kill_worker(after_post)

    async def _broker_kills(
        self, t0: float, feed_s: float, cluster: Any, pool: concurrent.futures.Executor
    ) -> None:
        for moment in self._moments(self.o.broker_kills, 0.2 * feed_s, 0.6 * feed_s):
            await asyncio.sleep(max(0.0, t0 + moment - time.monotonic()))
            await self._kill_broker(cluster, pool)

    async def _track_commits(self, s: Settings) -> None:
        """The group's committed offsets, sampled every 2 s, into the campaign's log when
        they change: after a loss they show which commit passed what was never posted."""
        assert s.bootstrap
        t = s.topics
        last = ""
        while True:
            with contextlib.suppress(Exception):  # a broker away: the next sample
                positions = await asyncio.wait_for(
                    group_positions(s.bootstrap, s.app_id, [t.payments, t.submissions]), 5
                )
                line = " ".join(f"{p.topic}:{p.partition}={p.committed}/{p.end}" for p in positions)
                if line != last:
                    note(f"committed/end {line}")
                    last = line
            await asyncio.sleep(2)

    async def _supervise(self) -> None:
        """A worker that exits unbidden is restarted, and reported."""
        assert self.workers is not None
        while True:
            await asyncio.sleep(0.5)
            self.workers.restart_crashed()

    # - the feed -

    async def _feed(self, bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        """About `rate` records a second, in tenths of a second; a batch the broker did not
        take (a broker down) is sent again (a Betalt event twice is a duplicate, R17)."""
        step = max(1, round(self.o.rate / 10))
        p = producer(bootstrap, one_record_batches=self.o.broker == "tansu")
        await p.start()
        try:
            for start in range(0, len(records), step):
                t = time.monotonic()
                batch = records[start : start + step]
                while True:
                    try:
                        futures = [await p.send(topic, k, v) for k, v in batch]
                        for f in futures:
                            await f
                        break
                    except BrokerError as exc:
                        say(f"feed: the broker did not take a batch ({exc!r}); sending it again")
                        await asyncio.sleep(1.0)
                self.fed += len(batch)
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
        finally:
            await p.stop()
            self.feed_done.set()

    # - the wait -

    async def _until_quiet(
        self, watcher: CampaignWatcher, betalt: set[Key], n_bad: int, s: Settings, deadline: float
    ) -> str:
        """Until every Betalt payment and unreadable line has an outcome and the group has
        committed everything, or no outcome came for QUIET_S, or the deadline."""
        assert self.workers is not None and self.sandbox is not None
        last_report = last_check = time.monotonic()
        while True:
            await watcher.poll()
            for t in self.tasks:  # a failed feed or kill must not pass unseen
                if t.done() and not t.cancelled() and (exc := t.exception()) is not None:
                    raise exc
            now = time.monotonic()
            seen = betalt & (watcher.posted | watcher.rejected | set(watcher.payment_dead_letters))
            bad_seen = watcher.unreadable_dead_lettered(betalt)
            if now - last_report >= 5:
                last_report = now
                say(
                    f"fed {self.fed}, outcomes {len(seen)}/{len(betalt)} (posted "
                    f"{len(watcher.posted & betalt)}, rejected {len(watcher.rejected & betalt)}"
                    f", dead letters {watcher.dead_lettered}), ledger "
                    f"{self.sandbox.ledger_size()} lines, Xledger requests "
                    f"{self.sandbox.stats.requests}, workers up {len(self.workers.alive())}/"
                    f"{len(self.workers.all)}, kills {len(self.kills)}, broker kills "
                    f"{len(self.broker_kills)}"
                )
            if now > deadline:
                return "the campaign's time ran out"
            if not self.feed_done.is_set() or self.busy:
                continue
            if len(seen) == len(betalt) and bad_seen >= n_bad and now - last_check >= 2:
                last_check = now
                if await _committed_all(s):
                    return "every outcome seen, every record committed"
            if now - watcher.last_outcome > QUIET_S:
                return f"no new outcome for {QUIET_S:.0f} s"


async def _committed_all(s: Settings) -> bool:
    """The worker group has committed every payment and submission record."""
    assert s.bootstrap
    try:
        positions = await group_positions(
            s.bootstrap, s.app_id, [s.topics.payments, s.topics.submissions]
        )
    except Exception:  # a broker coming back: not yet
        return False
    return bool(positions) and all(p.lag <= 0 for p in positions)


def _worker_env(s: Settings, sandbox_url: str, token_dir: Path) -> dict[str, str]:
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


async def _start_sandbox(profile: str, seed: int, token_dir: Path) -> XledgerSandbox:
    """The sandbox with the demo tenants; each token in a file named by its token_ref."""
    sandbox = XledgerSandbox(faults=PROFILES[profile], seed=seed)
    token_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for i, snap in enumerate(demo_snapshots()):
        token = secrets.token_urlsafe(24)
        sandbox.add_entity(token, entity_from_snapshot(snap, owner_db_id=42_365_431 + i))
        path = token_dir / snap.settings.token_ref
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
    await sandbox.start()
    return sandbox


def _records(o: ChaosOptions, events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """The events in order, with the unreadable lines at seeded random places among them."""
    out = [(e["payment_id"].encode(), json.dumps(e, ensure_ascii=False).encode()) for e in events]
    rng = random.Random(o.seed + 1)
    for line in bad_event_lines(o.n_bad, seed=o.seed):
        out.insert(rng.randint(0, len(out)), (b"unreadable", line.encode("utf-8", "replace")))
    return out


def _recovery(kills: list[Kill], receipts: list[tuple[float, str]]) -> tuple[float | None, ...]:
    """(longest kill → next receipt, longest kill → next receipt of the tenant whose batch
    was cut), in seconds; kills after the last receipt have no recovery to measure."""
    times = sorted(receipts)
    worst: float | None = None
    worst_tenant: float | None = None
    for k in kills:
        nxt = next((t for t, _ in times if t >= k.at), None)
        if nxt is not None:
            worst = max(worst or 0.0, nxt - k.at)
        if k.tenant is not None:
            mine = next((t for t, tenant in times if t >= k.at and tenant == k.tenant), None)
            if mine is not None:
                worst_tenant = max(worst_tenant or 0.0, mine - k.at)
    r = (worst, worst_tenant)
    return tuple(None if x is None else round(x, 2) for x in r)


def _ranges(offsets: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] → "0-2 5 7-8"."""
    out: list[str] = []
    run: list[int] = []
    for x in sorted(set(offsets)):
        if run and x != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(x)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return " ".join(out)


def _submission_map(watcher: CampaignWatcher, lost: set[Key], betalt: set[Key]) -> str:
    """Per submissions partition, the offsets of lost payments beside those with an
    outcome: a block of lost offsets is a commit past what was never posted."""
    topic = watcher.s.topics.submissions
    by_part: dict[int, dict[bool, list[int]]] = defaultdict(lambda: {True: [], False: []})
    for key in betalt:
        for where in watcher.positions.get(key, []):
            name, _, rest = where.partition(":")
            if name != topic:
                continue
            partition, _, offset = rest.partition("@")
            by_part[int(partition)][key in lost].append(int(offset))
    lines = ["submission offsets, lost | with an outcome:"]
    for part in sorted(by_part):
        seen = by_part[part]
        lines.append(f"  {topic}:{part} lost {_ranges(seen[True])} | ok {_ranges(seen[False])}")
    return "\n".join(lines)


def _reasons(by_payment: Mapping[Key, list[str]], betalt: set[Key]) -> dict[str, int]:
    """How many Betalt payments got each reason (once per payment and reason)."""
    counts = Counter(r for key, rs in by_payment.items() if key in betalt for r in set(rs))
    return dict(sorted(counts.items()))


async def run_campaign(o: ChaosOptions) -> tuple[dict[str, Any], Verdict, Path]:
    """The whole campaign; returns the summary, the verdict and the logs' folder. Every
    process it started is stopped when it returns or raises (Ctrl-C included)."""
    o.check()
    folder = o.log_dir or Path(tempfile.mkdtemp(prefix="flyt-chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    _TRANSCRIPT[:] = [folder / "campaign.log"]
    say(f"logs (campaign, workers, brokers) in {folder}")
    c = Campaign(o, folder)
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    # One thread starts, kills and restarts the brokers, and lives as long as they do:
    # their parent-death signal follows the thread that started them.
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chaos-broker")
    cluster: Any = None
    tasks = c.tasks
    watcher: CampaignWatcher | None = None
    token_dir = Path(tempfile.mkdtemp(prefix="flyt-chaos-tokens-"))
    with contextlib.suppress(NotImplementedError):
        main = asyncio.current_task()
        assert main is not None
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        if o.broker == "kafka":
            from worker.devenv.kafka_cluster import KafkaCluster

            n = 3 if o.broker_kills > 0 else 1
            say(f"starting Apache Kafka ({n} broker{'s' if n > 1 else ''})")
            cluster = KafkaCluster(brokers=n, log_dir=folder / "kafka")
        else:
            say("starting Tansu")
            cluster = EmbeddedBroker(log_path=folder / "tansu.log")
        await loop.run_in_executor(pool, cluster.start)
        bootstrap = cluster.bootstrap
        s = Settings(bootstrap=bootstrap, app_id=APP_ID, metrics_port=None, broker_kind=o.broker)
        if o.broker == "kafka":  # shorter sessions: a killed worker's partitions move in 10 s
            s = replace(s, session_timeout_s=10.0, heartbeat_interval_s=1.0, rebalance_timeout_s=10)
        s = await fit_to_cluster(s, bootstrap)
        await ensure_topics(bootstrap, topic_specs(s))
        snapshots = demo_snapshot_dicts()
        await publish(bootstrap, s.topics.registers, snapshot_records(snapshots))
        c.sandbox = await _start_sandbox(o.profile, o.seed, token_dir)
        c.sandbox.on_stored = lambda b: c._on_store(b.peer_port, b.tenant, b.lines)
        assert c.sandbox.url is not None
        say(f"broker {bootstrap}; Xledger sandbox {c.sandbox.url} (fault profile {o.profile})")

        events = list(generate_events(o.events, seed=o.seed))
        submitted, core_rejects = expected_outcomes(snapshots, events)
        betalt = {(e["tenant_id"], e["payment_id"]) for e in events if e["status"] == "Betalt"}
        records = _records(o, events)

        c.workers = Workers(o.workers, bootstrap, _worker_env(s, c.sandbox.url, token_dir), folder)
        for w in c.workers.all:
            c.workers.start(w)
        say(f"{o.workers} worker(s) starting; waiting until each is ready")
        if not await c.workers.ready(180):
            say("not every worker became ready within 180 s; going on (see their logs)")
        watcher = CampaignWatcher(bootstrap, s)
        await watcher.start()

        feed_s = len(records) / o.rate
        say(
            f"feeding {o.events} events and {o.n_bad} unreadable lines at {o.rate:g}/s "
            f"(~{feed_s:.0f} s); {o.kills} worker kill(s), {o.broker_kills} broker kill(s)"
        )
        t0 = time.monotonic()
        tasks.append(asyncio.create_task(c._feed(bootstrap, s.topics.payments, records)))
        chaos = [asyncio.create_task(c._worker_kills(t0, feed_s))]
        if o.broker_kills:
            chaos.append(asyncio.create_task(c._broker_kills(t0, feed_s, cluster, pool)))
        tasks += chaos
        tasks.append(asyncio.create_task(c._supervise()))
        tasks.append(asyncio.create_task(c._track_commits(s)))
        c.busy = True

        async def chaos_over() -> None:
            await asyncio.gather(*chaos)
            c.busy = False

        tasks.append(asyncio.create_task(chaos_over()))
        why = await c._until_quiet(watcher, betalt, o.n_bad, s, started + o.timeout_s)
        say(f"quiet: {why}; reading the ledger back from the sandbox")

        ledger = c.sandbox.ledger()
        verdict = check_r14(
            betalt,
            core_rejects,
            watcher.receipts,
            watcher.rejections,
            watcher.payment_dead_letters,
            ledger,
        )
        if o.ledger_out is not None:
            o.ledger_out.write_text(json.dumps(ledger, ensure_ascii=False, indent=1), "utf-8")
            say(f"ledger ({len(ledger)} lines) written to {o.ledger_out}")
        bad_dead = watcher.unreadable_dead_lettered(betalt)
        recovery, tenant_recovery = _recovery(c.kills + c.broker_kills, watcher.receipt_times)
        summary: dict[str, Any] = {
            "events": o.events,
            "betalt": len(betalt),
            "posted": verdict.posted,
            "rejected": verdict.rejected,
            "dead_lettered": verdict.dead_lettered,
            "lost": len(verdict.lost),
            "double_posted": len(verdict.double_posted),
            "kills": len(c.kills),
            "broker_kills": len(c.broker_kills),
            "xledger_requests": c.sandbox.stats.requests,
            "recovery_s_max": recovery,
            # What else the campaign saw (issue 10's note: faults, bad input, recovery).
            "kills_after_post": sum(1 for k in c.kills if k.tenant is not None),
            "tenant_recovery_s_max": tenant_recovery,
            "conflicting": len(verdict.conflicting),
            "ledger_problems": len(verdict.ledger_problems),
            "unexpected": len(verdict.unexpected),
            "posted_without_receipt": verdict.posted_without_receipt,
            "rejections_by_reason": _reasons(watcher.rejections, betalt),
            "dead_letters_by_reason": _reasons(watcher.payment_dead_letters, betalt),
            "core_submits": len(submitted),
            "bad_lines": o.n_bad,
            "bad_dead_lettered": bad_dead,
            # The same input dead-lettered again: written, then killed before its commit.
            "dead_letters_repeated": watcher.dead_letter_records - len(watcher.dead_letter_origins),
            "ledger_lines": len(ledger),
            "xledger_faults": dict(sorted(c.sandbox.stats.faults.items())),
            "worker_exits": len(c.workers.unexpected_exits),
            "broker": o.broker if o.broker == "tansu" else f"kafka x{cluster.n}",
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        for name in ("lost", "double_posted", "conflicting", "ledger_problems", "unexpected"):
            found = getattr(verdict, name)
            for line in found[:20]:
                say(f"{name.upper()}: {line}")
            if len(found) > 20:
                say(f"{name.upper()}: … and {len(found) - 20} more")
        if verdict.lost_keys:
            say(await watcher.explain(set(verdict.lost_keys)))
            say(_submission_map(watcher, set(verdict.lost_keys), betalt))
        return summary, verdict, folder
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        if c.workers is not None:
            c.workers.stop()
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()
        if c.sandbox is not None:
            await c.sandbox.stop()
        if cluster is not None:
            await loop.run_in_executor(pool, cluster.stop)
        pool.shutdown(wait=True)
        shutil.rmtree(token_dir, ignore_errors=True)
        _TRANSCRIPT.clear()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


def run(o: ChaosOptions) -> int:
    """`python -m worker chaos`: the campaign, its JSON summary as the last stdout line;
    0 only when R14 and R18 hold. The logs are removed after a clean run unless a folder
    was given, and kept (and named) otherwise."""
    o.check()
    # A killed broker makes aiokafka log every failed connection, and a worker killed
    # mid-request makes the sandbox's server log the lost connection: expected here. The
    # campaign's own lines say what was killed and when.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    folder = o.log_dir or Path(tempfile.mkdtemp(prefix="flyt-chaos-"))
    kept = o.log_dir is not None
    try:
        summary, verdict, _ = asyncio.run(run_campaign(replace(o, log_dir=folder)))
    except BaseException:
        say(f"the campaign did not finish; its logs are kept in {folder}")
        raise
    if verdict.ok and not kept:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        summary["logs"] = str(folder)
        (folder / "summary.json").write_text(json.dumps(summary, indent=1), "utf-8")
        say(f"logs kept in {folder}")
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 0 if verdict.ok else 1
