"""The streaming worker, wired: the register cache, the engine and the two stages.

  flyt.payment-status.v1 ─enrich─▶ xledger.submissions.v1 ─post─▶ xledger.receipts.v1
                             ├──▶ flyt.payment-rejections.v1   ├──▶ flyt.payment-rejections.v1
                             └──▶ xledger.dlq.v1               ├──▶ xledger.dlq.v1
             <app>-refused ◀─────────────────────────────────┘ (refused: back to the
                 (enrich: waits for R16)                          state's owner)

Start-up order: the register cache reads every snapshot first (`ready`), then the engine
joins the group; the stages take no record before the cache has caught up, so nothing is
evaluated or posted against a half-read register topic.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from worker import logs
from worker.config import Settings
from worker.contracts import DlqReason
from worker.contracts.headers import DLQ_ERROR_MESSAGE
from worker.core.register_book import RegisterBook
from worker.engine.backend import Backend, GroupSettings
from worker.engine.engine import Engine, EngineSettings, StageFactory
from worker.engine.kafka import KafkaBackend
from worker.engine.records import Output
from worker.kafka_clients.connection import connection
from worker.pipeline.dead_letters import dead_letter
from worker.pipeline.enrich_stage import EnrichStage
from worker.pipeline.payment_state import PaymentStates
from worker.pipeline.post_stage import PostStage
from worker.pipeline.register_cache import RegisterCache
from worker.pipeline.tenant_control import TenantControl
from worker.pipeline.topics import (
    HANDLED,
    LARGE_RECORD_BYTES,
    PENDING,
    refused_topic,
    stores,
)
from worker.xledger.client import XledgerClient

log = logs.get("worker.pipeline")

FLUSH_MARGIN_S = 3.0  # after the request deadline, for writing outcomes and committing
MEMBERSHIP_MARGIN_S = 2.0
# Of a stop's grace, what is kept for leaving the group and closing the clients after the
# hand-over (runtime.py, Pipeline.stop, Engine.stop): the hand-over gets the rest.
STOP_LEAVE_S = 5.0


class SettingsConflict(ValueError):
    """Settings that would break a guarantee: refused at start, with what to change."""


@dataclass(frozen=True)
class Timings:
    hand_over_s: float  # a revoke lets in-flight work run this long
    membership_window_s: float  # a mutation needs membership confirmed this recently


def timings(s: Settings) -> Timings:
    """The hand-over's timings from the request deadline and the group's (engine.md):
    a revoke waits out one request; the rebalance timeout must exceed that plus a flush;
    a zombie cannot start a mutation its successor's first lookup would miss."""
    p = s.profile()
    deadline = s.xledger_request_deadline_s
    hand_over = deadline + FLUSH_MARGIN_S
    if s.stop_grace_s < hand_over + STOP_LEAVE_S:
        # A stop never cuts a mutation (engine.md): the grace holds a whole hand-over.
        raise SettingsConflict(
            f"the stop grace ({s.stop_grace_s:g} s) must be at least the Xledger request "
            f"deadline plus {FLUSH_MARGIN_S:g} s to flush plus {STOP_LEAVE_S:g} s to leave "
            f"({hand_over + STOP_LEAVE_S:g} s): raise FLYT_STOP_GRACE_S (and the pod's "
            "terminationGracePeriodSeconds above it) or lower FLYT_XLEDGER_REQUEST_DEADLINE_S"
        )
    if s.xledger_settle_s < deadline:
        raise SettingsConflict(
            f"the settle time ({s.xledger_settle_s:g} s) must be at least the Xledger request "
            f"deadline ({deadline:g} s): Xledger may still be storing a request the worker "
            "stopped waiting for; raise FLYT_XLEDGER_SETTLE_S"
        )
    if p.rebalance_timeout_s <= hand_over:
        raise SettingsConflict(
            f"the rebalance timeout ({p.rebalance_timeout_s:g} s) must exceed the Xledger request "
            f"deadline plus {FLUSH_MARGIN_S:g} s to flush ({hand_over:g} s): raise "
            "FLYT_REBALANCE_TIMEOUT_S or lower FLYT_XLEDGER_REQUEST_DEADLINE_S"
        )
    window = p.session_timeout_s - deadline - p.heartbeat_interval_s - MEMBERSHIP_MARGIN_S
    return Timings(hand_over, max(0.0, window))


STAGES = ("enrich", "post")


def stage_names(s: Settings) -> list[str]:
    """The stages this worker runs (FLYT_STAGES): `enrich,post` (both), or one."""
    names = [n.strip() for n in s.stages.split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        raise SettingsConflict(f"FLYT_STAGES={s.stages!r}: name one or both of {', '.join(STAGES)}")
    return [n for n in STAGES if n in names]


def engine_settings(s: Settings) -> EngineSettings:
    p = s.profile()
    t = timings(s)
    names = stage_names(s)
    inputs = {s.topics.payments, refused_topic(s)} if "enrich" in names else set()
    if "post" in names:
        inputs.add(s.topics.submissions)
    group = GroupSettings(
        s.app_id,
        session_timeout_s=p.session_timeout_s,
        heartbeat_interval_s=p.heartbeat_interval_s,
        rebalance_timeout_s=p.rebalance_timeout_s,
        copartitioned=((s.topics.payments, refused_topic(s)),),
        max_poll_records=s.enrich_batch_max,
    )
    return EngineSettings(
        group,
        stores=tuple(spec for spec in stores(s) if spec.topic in inputs),
        hand_over_s=t.hand_over_s,
        membership_window_s=t.membership_window_s,
        max_undone_per_partition=s.max_undone_per_partition,
    )


def kafka_backend(s: Settings, bootstrap: str) -> KafkaBackend:
    return KafkaBackend(
        connection(bootstrap, s.kafka),  # reached with the settings' TLS and SASL
        idempotent=s.profile().idempotent_producers,
        # The broker judges each topic's limit; a dead letter may exceed the default.
        max_request_size=LARGE_RECORD_BYTES + 64 * 1024,
    )


class Pipeline:
    def __init__(
        self,
        s: Settings,
        bootstrap: str | None,
        client: XledgerClient,
        book: RegisterBook | None = None,
        backend: Backend | None = None,
    ) -> None:
        if backend is None:
            if bootstrap is None:
                raise ValueError("a bootstrap address or a backend is needed")
            backend = kafka_backend(s, bootstrap)
        self.s = s
        self.book = book or RegisterBook()
        self.client = client
        self.backend = backend
        self.cache = RegisterCache(backend.reader(), s.topics.registers, self.book)
        self.control = TenantControl(backend.reader(), s.topics.control)  # paused by hand
        names = stage_names(s)
        factories: list[StageFactory] = []
        if "enrich" in names:
            factories.append(lambda ctx: EnrichStage(s, self.book, ctx))
        if "post" in names:
            factories.append(lambda ctx: PostStage(s, self.book, client, ctx, self.control))
        self.engine = Engine(
            backend,
            engine_settings(s),
            factories,
            unwritable=self._unwritable,
            shrink=self._shrink,
        )
        self.enrich_stage: EnrichStage | None = next(
            (st for st in self.engine.stages if isinstance(st, EnrichStage)), None
        )
        self.post_stage: PostStage | None = next(
            (st for st in self.engine.stages if isinstance(st, PostStage)), None
        )
        enrich = self.enrich_stage
        if enrich is not None:
            self.cache.listeners.append(lambda snap: enrich.snapshot_accepted(snap.tenant_id))
        self._starting: asyncio.Task[None] | None = None

    def states(self) -> list[PaymentStates]:
        """The payment state of every payment-status partition held here."""
        return [
            PaymentStates(p.partition, self.engine.store(HANDLED, p.partition), p)
            for p in self.engine.held_stores(PENDING)
        ]

    def handled_as(self, tenant: str, payment: str) -> str | None:
        """The payment's outcome so far (R17), if its partition is held here."""
        for states in self.states():
            state = states.handled_as((tenant, payment))
            if state is not None:
                return state
        return None

    def waiting_entry(self, tenant: str, payment: str) -> dict[str, Any] | None:
        """The payment's waiting rejection (R16), if any and if its partition is held here."""
        for states in self.states():
            entry = states.waiting_entry((tenant, payment))
            if entry is not None:
                return entry
        return None

    @property
    def ready(self) -> bool:
        """The register cache has caught up and the first assignment is prepared."""
        return self.cache.ready.is_set() and self.engine.assignments > 0

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not self.ready:
                await asyncio.sleep(0.05)

    async def start(self) -> None:
        """Start reading registers; the engine joins the group once they are read."""
        await self.cache.start()
        await self.control.start()
        self._starting = asyncio.create_task(self._start_engine(), name="pipeline-start")

    async def _start_engine(self) -> None:
        await self.cache.ready.wait()  # never evaluate against a half-read register topic
        await self.control.ready.wait()  # nor post before knowing who is paused by hand
        await self.engine.start()
        while not self.ready:
            await asyncio.sleep(0.05)
        log.info("worker_ready", tenants=len(self.book), partitions=len(self.engine.lanes))

    async def stop(self, deadline: float | None = None) -> None:
        """Hand over and leave by `deadline` (loop time; default: the grace period)."""
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.s.stop_grace_s
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self.engine.started:
            await self.engine.stop(deadline=deadline)
        try:
            async with asyncio.timeout(max(0.2, deadline - asyncio.get_running_loop().time())):
                await self.cache.stop()
                await self.control.stop()
        except TimeoutError:
            log.warning("register_cache_stop_timed_out")

    async def failed(self) -> BaseException:
        """Waits until the engine stops by itself (a crash), and says why."""
        while self.engine.failure is None:
            await asyncio.sleep(0.1)
        return await self.engine.failure

    def _unwritable(self, out: Output, exc: BaseException) -> Output:
        """The dead letter of an input whose output the broker will never take."""
        source = out.source
        assert source is not None
        return dead_letter(
            self.s.topics.dlq,
            source,
            reason=DlqReason.UNWRITABLE,
            error_class=type(exc).__name__,
            error=f"its output to {out.topic} ({out.size()} bytes) is larger than the broker takes",
            stage="post" if source.topic == self.s.topics.submissions else "enrich",
        )

    def _shrink(self, out: Output, exc: BaseException) -> Output | None:
        """A dead letter larger than the DLQ takes (its input was larger still: Tansu has
        no size limit of its own): keep its first bytes, and say so in its message."""
        keep = 64 * 1024
        if out.topic != self.s.topics.dlq:
            return None
        value, key = out.value or b"", out.key or b""
        note = (
            f" [the record ({len(key)} bytes of key, {len(value)} of value) is larger than "
            f"the dead-letter queue takes: only its first {keep} bytes of each are kept]"
        )
        headers = [
            (k, v + note.encode() if k == DLQ_ERROR_MESSAGE else v) for k, v in out.headers or []
        ]
        return Output(out.topic, key[:keep], value[:keep], headers)
