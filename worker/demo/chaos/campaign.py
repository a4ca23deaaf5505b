"""The campaign's steps, in order: a broker; topics, registers and the sandbox; the workers;
the feed with the kills beside it; the wait until the flow is quiet; the verdict and the
JSON summary. Every process a campaign starts is stopped when it ends, however it ends."""

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
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from worker.config import Settings
from worker.demo.chaos import transcript
from worker.demo.chaos.faults import Faults
from worker.demo.chaos.flow import Flow, committed_all, start_flow
from worker.demo.chaos.options import ChaosOptions
from worker.demo.chaos.outcomes import CampaignWatcher
from worker.demo.chaos.transcript import say
from worker.demo.chaos.verdict import (
    Verdict,
    check_r14,
    expected_outcomes,
    reasons,
    recovery,
    submission_map,
)
from worker.demo.chaos.workers import Workers, worker_env
from worker.demo.events import bad_event_lines, generate_events
from worker.demo.harness import fit_to_cluster
from worker.demo.snapshots import demo_snapshot_dicts, demo_snapshots
from worker.demo.watcher import Key
from worker.devenv.feed import publish, snapshot_records
from worker.devenv.sandbox import PROFILES, XledgerSandbox, entity_from_snapshot
from worker.devenv.tansu import EmbeddedBroker
from worker.engine.topics import ensure_topics
from worker.pipeline.topics import topic_specs

# No new outcome and no Xledger request this long after the feed and the kills: the flow
# is over. Requests count: a payment whose mutation's outcome was unknown twice in a row
# waits two settle times (2 × 60 s) with nothing new on the topics, and is looked up
# after each (one Tansu campaign ended 35 s before the second lookup: 250 posted
# payments judged without their receipts).
QUIET_S = 90.0
APP_ID = "flyt-xledger-chaos"


@dataclass
class Running:
    """What a campaign has started, for the wait and the summary."""

    o: ChaosOptions
    s: Settings
    sandbox: XledgerSandbox
    workers: Workers
    faults: Faults
    flow: Flow
    watcher: CampaignWatcher


async def until_quiet(r: Running, betalt: set[Key], deadline: float) -> str:
    """Until every Betalt payment and unreadable line has an outcome and the group has
    committed everything, or neither an outcome nor an Xledger request came for QUIET_S,
    or the deadline."""
    watcher, flow = r.watcher, r.flow
    last_report = last_check = last_request_at = time.monotonic()
    requests = r.sandbox.stats.requests
    while True:
        await watcher.poll()
        flow.raise_failure()
        now = time.monotonic()
        if r.sandbox.stats.requests != requests:
            requests, last_request_at = r.sandbox.stats.requests, now
        seen = betalt & (watcher.posted | watcher.rejected | set(watcher.payment_dead_letters))
        bad_seen = watcher.unreadable_dead_lettered(betalt)
        if now - last_report >= 5:
            last_report = now
            say(
                f"fed {flow.fed}, outcomes {len(seen)}/{len(betalt)} (posted "
                f"{len(watcher.posted & betalt)}, rejected {len(watcher.rejected & betalt)}"
                f", dead letters {watcher.dead_lettered}), ledger "
                f"{r.sandbox.ledger_size()} lines, Xledger requests "
                f"{r.sandbox.stats.requests}, workers up {len(r.workers.alive())}/"
                f"{len(r.workers.all)}, kills {len(r.faults.kills)}, broker kills "
                f"{len(r.faults.broker_kills)}"
            )
        if now > deadline:
            return "the campaign's time ran out"
        if not flow.feed_done.is_set() or flow.busy:
            continue
        if len(seen) == len(betalt) and bad_seen >= r.o.n_bad and now - last_check >= 2:
            last_check = now
            if await committed_all(r.s):
                return "every outcome seen, every record committed"
        if now - max(watcher.last_outcome, last_request_at) > QUIET_S:
            return f"no new outcome and no Xledger request for {QUIET_S:.0f} s"


async def start_sandbox(profile: str, seed: int, token_dir: Path) -> XledgerSandbox:
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


def input_records(o: ChaosOptions, events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """The events in order, with the unreadable lines at seeded random places among them."""
    out = [(e["payment_id"].encode(), json.dumps(e, ensure_ascii=False).encode()) for e in events]
    rng = random.Random(o.seed + 1)
    for line in bad_event_lines(o.n_bad, seed=o.seed):
        out.insert(rng.randint(0, len(out)), (b"unreadable", line.encode("utf-8", "replace")))
    return out


def start_cluster(o: ChaosOptions, folder: Path) -> Any:
    """Apache Kafka (three brokers when brokers are to be killed) or Tansu; not started."""
    if o.broker == "kafka":
        from worker.devenv.kafka_cluster import KafkaCluster

        n = 3 if o.broker_kills > 0 else 1
        say(f"starting Apache Kafka ({n} broker{'s' if n > 1 else ''})")
        return KafkaCluster(brokers=n, log_dir=folder / "kafka")
    say("starting Tansu")
    return EmbeddedBroker(log_path=folder / "tansu.log")


async def campaign_settings(o: ChaosOptions, bootstrap: str) -> Settings:
    """The workers' settings, fitted to the cluster; topics made, registers published."""
    s = Settings(bootstrap=bootstrap, app_id=APP_ID, metrics_port=None, broker_kind=o.broker)
    if o.broker == "kafka":  # shorter sessions: a killed worker's partitions move in 10 s
        # The rebalance timeout must exceed a hand-over (the request deadline + 3 s).
        rebalance = s.xledger_request_deadline_s + 10
        s = replace(
            s, session_timeout_s=10.0, heartbeat_interval_s=1.0, rebalance_timeout_s=rebalance
        )
    s = await fit_to_cluster(s, bootstrap)
    await ensure_topics(bootstrap, topic_specs(s))
    await publish(bootstrap, s.topics.registers, snapshot_records(demo_snapshot_dicts()))
    return s


async def judge(
    r: Running, betalt: set[Key], submitted: set[Key], core_rejects: set[Key], cluster: Any
) -> tuple[dict[str, Any], Verdict]:
    """The ledger read back from the sandbox and judged; the summary; what was wrong,
    said in the transcript."""
    o, watcher, faults = r.o, r.watcher, r.faults
    ledger = r.sandbox.ledger()
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
    worst, tenant_worst = recovery(faults.kills + faults.broker_kills, watcher.receipt_times)
    summary: dict[str, Any] = {
        "events": o.events,
        "betalt": len(betalt),
        "posted": verdict.posted,
        "rejected": verdict.rejected,
        "dead_lettered": verdict.dead_lettered,
        "lost": len(verdict.lost),
        "double_posted": len(verdict.double_posted),
        "kills": len(faults.kills),
        "broker_kills": len(faults.broker_kills),
        "xledger_requests": r.sandbox.stats.requests,
        "recovery_s_max": worst,
        # What else the campaign saw (issue 10's note: faults, bad input, recovery).
        "kills_after_post": sum(1 for k in faults.kills if k.tenant is not None),
        "tenant_recovery_s_max": tenant_worst,
        "conflicting": len(verdict.conflicting),
        "ledger_problems": len(verdict.ledger_problems),
        "unexpected": len(verdict.unexpected),
        "posted_without_receipt": verdict.posted_without_receipt,
        "rejections_by_reason": reasons(watcher.rejections, betalt),
        "dead_letters_by_reason": reasons(watcher.payment_dead_letters, betalt),
        "core_submits": len(submitted),
        "bad_lines": o.n_bad,
        "bad_dead_lettered": watcher.unreadable_dead_lettered(betalt),
        # The same input dead-lettered again: written, then killed before its commit.
        "dead_letters_repeated": watcher.dead_letter_records - len(watcher.dead_letter_origins),
        "ledger_lines": len(ledger),
        "xledger_faults": dict(sorted(r.sandbox.stats.faults.items())),
        "worker_exits": len(r.workers.unexpected_exits),
        "broker": o.broker if o.broker == "tansu" else f"kafka x{cluster.n}",
    }
    for name in ("lost", "double_posted", "conflicting", "ledger_problems", "unexpected"):
        found = getattr(verdict, name)
        for line in found[:20]:
            say(f"{name.upper()}: {line}")
        if len(found) > 20:
            say(f"{name.upper()}: … and {len(found) - 20} more")
    if verdict.lost_keys:
        lost = set(verdict.lost_keys)
        say(await watcher.explain(lost))
        say(submission_map(r.s.topics.submissions, watcher.positions, lost, betalt))
    return summary, verdict


async def run_campaign(o: ChaosOptions) -> tuple[dict[str, Any], Verdict, Path]:
    """The whole campaign; returns the summary, the verdict and the logs' folder. Every
    process it started is stopped when it returns or raises (Ctrl-C included)."""
    o.check()
    folder = o.log_dir or Path(tempfile.mkdtemp(prefix="flyt-chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    transcript.keep_in(folder / "campaign.log")
    say(f"logs (campaign, workers, brokers) in {folder}")
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    # One thread starts, kills and restarts the brokers, and lives as long as they do:
    # their parent-death signal follows the thread that started them.
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chaos-broker")
    cluster: Any = None
    flow = Flow()
    workers: Workers | None = None
    sandbox: XledgerSandbox | None = None
    watcher: CampaignWatcher | None = None
    token_dir = Path(tempfile.mkdtemp(prefix="flyt-chaos-tokens-"))
    with contextlib.suppress(NotImplementedError):
        main = asyncio.current_task()
        assert main is not None
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        cluster = start_cluster(o, folder)
        await loop.run_in_executor(pool, cluster.start)
        bootstrap = cluster.bootstrap
        s = await campaign_settings(o, bootstrap)
        sandbox = await start_sandbox(o.profile, o.seed, token_dir)
        assert sandbox.url is not None
        say(f"broker {bootstrap}; Xledger sandbox {sandbox.url} (fault profile {o.profile})")

        events = list(generate_events(o.events, seed=o.seed))
        submitted, core_rejects = expected_outcomes(demo_snapshot_dicts(), events)
        betalt = {(e["tenant_id"], e["payment_id"]) for e in events if e["status"] == "Betalt"}
        records = input_records(o, events)

        workers = Workers(o.workers, bootstrap, worker_env(s, sandbox.url, token_dir), folder)
        faults = Faults(o, workers)
        sandbox.on_stored = faults.on_stored
        for w in workers.all:
            workers.start(w)
        say(f"{o.workers} worker(s) starting; waiting until each is ready")
        if not await workers.ready(180):
            say("not every worker became ready within 180 s; going on (see their logs)")
        watcher = CampaignWatcher(bootstrap, s)
        await watcher.start()
        running = Running(o, s, sandbox, workers, faults, flow, watcher)

        start_flow(flow, o, s, workers, faults, records, cluster, pool)
        why = await until_quiet(running, betalt, started + o.timeout_s)
        say(f"quiet: {why}; reading the ledger back from the sandbox")
        summary, verdict = await judge(running, betalt, submitted, core_rejects, cluster)
        summary["elapsed_s"] = round(time.monotonic() - started, 1)
        return summary, verdict, folder
    finally:
        await flow.cancel()
        if workers is not None:
            workers.stop()
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()
        if sandbox is not None:
            await sandbox.stop()
        if cluster is not None:
            await loop.run_in_executor(pool, cluster.stop)
        pool.shutdown(wait=True)
        shutil.rmtree(token_dir, ignore_errors=True)
        transcript.stop()
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
