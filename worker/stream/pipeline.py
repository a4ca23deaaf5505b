"""The streaming worker: a faust app with two stages and the R16 re-evaluation.

  flyt.payment-status.v1 ─enrich─▶ xledger.submissions.v1 ─post─▶ xledger.receipts.v1
                             ├──▶ flyt.payment-rejections.v1   ├──▶ flyt.payment-rejections.v1
                             └──▶ xledger.dlq.v1               └──▶ xledger.dlq.v1

Offsets: a batch's events are acknowledged only after the broker has every output of the
batch (`deliver` retries until it has), and only then is the payment's state written.
Duplicates: the `handled` table (changelogged) remembers each payment's outcome.
Never twice in Xledger: the client looks up external identifiers before posting.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from worker import logs, metrics
from worker.config import Settings
from worker.contracts import PaymentStatusEvent, RegisterSnapshot, Status
from worker.contracts.reading import Unreadable, read_event
from worker.core import Enriched, evaluate
from worker.core.outcome import Rejected
from worker.core.register_book import RegisterBook
from worker.stream.dead_letters import dead_letter
from worker.stream.delivery import Delivery, Output
from worker.stream.faust_app import make_app
from worker.stream.ordered_acks import OrderedAcks
from worker.stream.post_stage import PostStage
from worker.stream.register_cache import RegisterCache
from worker.stream.topics import replication_config
from worker.xledger.client import XledgerClient

log = logs.get("worker.stream")

SUBMITTED = "submitted"
REJECTED = "rejected"


def _older(version: int | None, current: int) -> bool:
    return version is None or version < current


class Pipeline:
    def __init__(
        self, s: Settings, bootstrap: str, client: XledgerClient, book: RegisterBook | None = None
    ) -> None:
        self.s = s
        self.book = book or RegisterBook()
        self.client = client
        self.cache = RegisterCache(bootstrap, s.topics.registers, self.book)
        self.cache.listeners.append(self._reevaluate)
        app = self.app = make_app(s, bootstrap)
        raw: dict[str, Any] = {
            "key_serializer": "raw",
            "value_serializer": "raw",
            "partitions": s.partitions,
        }
        t = s.topics
        self.payments = app.topic(t.payments, **raw)
        self.submissions = app.topic(t.submissions, **raw)
        # Outputs go through a producer of our own that batches normally: faust's producer
        # sends one-record batches on Tansu (for its changelogs' sake), which would slow
        # every output. Each output's future is awaited before its input is acknowledged.
        self.out = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=2,
            enable_idempotence=s.profile().idempotent_producers,
        )
        # Keyed by the payment id's bytes, as the input is, and placed by the partitioner:
        # a table's partition then matches its payment's input partition, even outside a
        # stream. (key_type=bytes makes faust write and recover keys raw.) Values map
        # tenant → state, since two tenants may use the same payment id.
        table: dict[str, Any] = {
            "partitions": s.partitions,
            "use_partitioner": True,
            "key_type": bytes,
            "default": dict,
            "extra_topic_configs": replication_config(s),
        }
        self.handled = app.Table("handled", **table)
        self.pending = app.Table("pending-rejections", **table)  # R16: retryable rejections
        self.deliver = Delivery(self.out).deliver
        self.post_stage = PostStage(s, self.book, client, self.deliver, app.crash)
        self.acks: OrderedAcks | None = None  # set when the post agent starts
        # mode types the receiver with a keyword-only `signal`, which faust passes.
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        # Set once the register cache has caught up and the first rebalance (with table
        # recovery) is complete: from then on events are processed as they arrive.
        self.ready = asyncio.Event()
        self._after_rebalance: asyncio.Task[None] | None = None
        self._reevaluating: dict[str, asyncio.Lock] = {}
        self.enrich_agent = app.agent(self.payments, name="enrich")(self._enrich_stream)
        self.post_agent = app.agent(self.submissions, name="post")(self._post_stream)

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        await self.out.start()
        await self.cache.start()
        await self.app.start()

    async def stop(self) -> None:
        self.post_stage.stop()
        if self._after_rebalance is not None:
            self._after_rebalance.cancel()
        await self.app.stop()
        await self.cache.stop()
        await self.out.stop()

    async def _on_assigned(self, app: Any, *args: Any, **kwargs: Any) -> None:
        assigned: set[Any] = kwargs.get("assigned", args[0] if args else set())
        for topic in (self.s.topics.payments, self.s.topics.submissions):
            n = sum(1 for tp in assigned if tp.topic == topic)
            metrics.ASSIGNED_PARTITIONS.labels(topic).set(n)
        log.info(
            "partitions_assigned",
            partitions=sorted(
                f"{tp.topic}:{tp.partition}"
                for tp in assigned
                if not tp.topic.startswith(self.s.app_id)
            ),
        )

    async def _on_rebalance_complete(self, *args: Any, **kwargs: Any) -> None:
        # Not inside faust's signal dispatch: that would hold up its own recovery.
        if self._after_rebalance is not None:
            self._after_rebalance.cancel()
        self._after_rebalance = asyncio.create_task(self._catch_up_when_ready())

    async def _catch_up_when_ready(self) -> None:
        await self.cache.ready.wait()
        await self._know_changelogs()
        if not self.ready.is_set():
            self.ready.set()
            log.info("worker_ready", tenants=len(self.book))
        await self._catch_up()

    async def _know_changelogs(self) -> None:
        """faust places a table write (use_partitioner) by its producer's metadata, which
        lacks a changelog the producer has not written to yet (seen on Apache Kafka):
        fetch it before the first write."""
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        for table in (self.handled, self.pending):
            await producer.partitions_for(table.changelog_topic.get_topic_name())

    # --- enrich stage ----------------------------------------------------------------

    async def _enrich_stream(self, stream: Any) -> None:
        await self.cache.ready.wait()  # never evaluate against a half-read register topic
        await self._know_changelogs()
        async for events in stream.take_events(
            self.s.enrich_batch_max, within=self.s.enrich_batch_window_s
        ):
            await self._enrich_batch(events)

    async def _enrich_batch(self, events: list[Any]) -> None:
        outputs: list[Output] = []
        handled: dict[tuple[str, str], str] = {}
        pending: dict[tuple[str, str], dict[str, Any] | None] = {}
        now = datetime.now(UTC)
        for event in events:
            parsed = read_event(event.value)
            if isinstance(parsed, Unreadable):
                metrics.EVENTS.labels("invalid").inc()
                log.warning(
                    "event_invalid",
                    event_id=parsed.event_id,
                    payment_id=parsed.payment_id,
                    error=parsed.error,
                    partition=event.message.partition,
                    offset=event.message.offset,
                )
                outputs.append(
                    dead_letter(
                        self.s.topics.dlq,
                        event.message,
                        reason="invalid",
                        error_class=parsed.error_class,
                        error=parsed.error,
                        stage="enrich",
                    )
                )
                continue
            if parsed.status is not Status.BETALT:  # R17
                metrics.EVENTS.labels("ignored").inc()
                continue
            key = (parsed.tenant_id, parsed.payment_id)
            if key in handled or self._state(*key) is not None:  # R17: a duplicate
                metrics.EVENTS.labels("duplicate").inc()
                log.info(
                    "event_duplicate", tenant_id=key[0], payment_id=key[1], event_id=parsed.event_id
                )
                continue
            t0 = time.perf_counter()
            result = evaluate(parsed, self.book.index(parsed.tenant_id))
            metrics.ENRICH_SECONDS.observe(time.perf_counter() - t0)
            if isinstance(result, Enriched):
                outputs.append(self._submission(parsed, result, now))
                handled[key] = SUBMITTED
                metrics.EVENTS.labels("submitted").inc()
            else:
                outputs.append(self._rejection(parsed, result, now))
                handled[key] = REJECTED
                if result.retryable:
                    pending[key] = {
                        "event": event.value.decode(),
                        "version": result.snapshot_version,
                    }
                metrics.EVENTS.labels("rejected").inc()
        await self.deliver(outputs)  # every output acknowledged …
        for (tenant, payment), state in handled.items():  # … before the state is written
            self._set(self.handled, payment, tenant, state)
        for (tenant, payment), entry in pending.items():
            self._set(self.pending, payment, tenant, entry)

    def _state(self, tenant: str, payment: str) -> str | None:
        states = self.handled.get(payment.encode()) or {}
        return states.get(tenant)

    @staticmethod
    def _set(table: Any, payment: str, tenant: str, value: Any) -> None:
        key = payment.encode()
        current = dict(table.get(key) or {})
        if value is None:
            current.pop(tenant, None)
        else:
            current[tenant] = value
        # An emptied entry is written as {}, never deleted: Tansu returns a tombstone as
        # empty bytes, which breaks faust's recovery of a JSON table.
        table[key] = current

    def _submission(self, event: PaymentStatusEvent, result: Enriched, now: datetime) -> Output:
        sub = result.submission(event, now)
        log.info(
            "payment_enriched",
            tenant_id=event.tenant_id,
            payment_id=event.payment_id,
            event_id=event.event_id,
            snapshot_version=result.snapshot_version,
        )
        return Output(
            self.s.topics.submissions, event.tenant_id.encode(), sub.model_dump_json().encode()
        )

    def _rejection(self, event: PaymentStatusEvent, result: Rejected, now: datetime) -> Output:
        rejection = result.rejection(event, now)
        log.info(
            "payment_rejected",
            tenant_id=event.tenant_id,
            payment_id=event.payment_id,
            event_id=event.event_id,
            reason=str(result.reason),
            codes=[str(p.code) for p in result.problems],
            retryable=result.retryable,
        )
        return Output(
            self.s.topics.rejections,
            event.payment_id.encode(),
            rejection.model_dump_json().encode(),
        )

    # --- R16: re-evaluation on a newer snapshot ----------------------------------------

    async def _reevaluate(self, snapshot: RegisterSnapshot) -> None:
        """A newer snapshot arrived: evaluate the tenant's waiting rejections again."""
        if self.ready.is_set():  # before that, tables are not recovered: see _catch_up
            await self._reevaluate_tenant(snapshot.tenant_id)

    async def _catch_up(self) -> None:
        """After a rebalance: snapshots that arrived while these partitions were elsewhere
        (or the worker was down) have not been applied to their waiting rejections yet."""
        tenants = {t for _, states in list(self.pending.items()) for t in states}
        for tenant in sorted(tenants):
            await self._reevaluate_tenant(tenant)

    async def _reevaluate_tenant(self, tenant: str) -> None:
        # One at a time per tenant: the snapshot listener and a catch-up may coincide.
        async with self._reevaluating.setdefault(tenant, asyncio.Lock()):
            await self._reevaluate_waiting(tenant)

    async def _reevaluate_waiting(self, tenant: str) -> None:
        index = self.book.index(tenant)
        if index is None:
            return
        # Only entries evaluated against an older version (None: before any snapshot);
        # this makes a repeat harmless.
        waiting = [
            (key.decode(), states[tenant])
            for key, states in list(self.pending.items())
            if tenant in states and _older(states[tenant].get("version"), index.version)
        ]
        if not waiting:
            return
        now = datetime.now(UTC)
        outputs: list[Output] = []
        done: list[str] = []
        updated: list[tuple[str, dict[str, Any]]] = []
        for payment, entry in waiting:
            event = PaymentStatusEvent.model_validate_json(entry["event"])
            result = evaluate(event, index)
            if isinstance(result, Enriched):
                outputs.append(self._submission(event, result, now))
                done.append(payment)
                metrics.REEVALUATIONS.labels(tenant, "submitted").inc()
            else:
                outputs.append(self._rejection(event, result, now))
                updated.append((payment, {**entry, "version": index.version}))
                metrics.REEVALUATIONS.labels(tenant, "still_rejected").inc()
        await self.deliver(outputs)
        for payment in done:
            self._set(self.handled, payment, tenant, SUBMITTED)
            self._set(self.pending, payment, tenant, None)
        for payment, entry in updated:
            self._set(self.pending, payment, tenant, entry)
        log.info(
            "rejections_reevaluated",
            tenant_id=tenant,
            version=index.version,
            submitted=len(done),
            still_rejected=len(updated),
        )

    # --- post stage ----------------------------------------------------------------------

    async def _post_stream(self, stream: Any) -> None:
        manual = stream.noack()  # acked per payment, once its outcome is out, in order
        acks = OrderedAcks(manual.ack, lambda: int(self.app.rebalancing_count))
        self.acks = acks
        await self.post_stage.run(manual.events(), acks)
