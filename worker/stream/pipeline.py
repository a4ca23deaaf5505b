"""The streaming worker: the faust app, its tables, and the two stages wired to it.

  flyt.payment-status.v1 ─enrich─▶ xledger.submissions.v1 ─post─▶ xledger.receipts.v1
                             ├──▶ flyt.payment-rejections.v1   ├──▶ flyt.payment-rejections.v1
                             └──▶ xledger.dlq.v1               └──▶ xledger.dlq.v1

The stages are `enrich_stage.py` (with R16) and `post_stage.py`; the commit rule is
`delivery.py` (inputs are acknowledged only after the broker holds all their outputs).
Duplicates: the `handled` table (changelogged) remembers each payment's outcome.
Never twice in Xledger: the client looks up external identifiers before posting.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from worker import logs, metrics
from worker.config import Settings
from worker.contracts import DlqReason, RegisterSnapshot
from worker.core.register_book import RegisterBook
from worker.stream.dead_letters import dead_letter
from worker.stream.delivery import Delivery, Output
from worker.stream.enrich_stage import EnrichStage, PaymentStates
from worker.stream.faust_app import make_app
from worker.stream.ordered_acks import OrderedAcks
from worker.stream.post_stage import PostStage
from worker.stream.register_cache import RegisterCache
from worker.stream.topics import (
    HANDLED_TABLE,
    LARGE_RECORD_BYTES,
    PENDING_TABLE,
    replication_config,
)
from worker.xledger.client import XledgerClient

log = logs.get("worker.stream")


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
            # The broker judges each topic's limit; a dead letter may exceed the default.
            max_request_size=LARGE_RECORD_BYTES + 64 * 1024,
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
        self.handled = app.Table(HANDLED_TABLE, **table)
        self.pending = app.Table(PENDING_TABLE, **table)  # R16: retryable rejections
        self.deliver = Delivery(self.out, self._unwritable, self._shrink).deliver
        states = PaymentStates(self.handled, self.pending)
        self.enrich_stage = EnrichStage(s, self.book, self.deliver, states)
        self.post_stage = PostStage(s, self.book, client, self.deliver, app.crash, states)
        # mode types the receiver with a keyword-only `signal`, which faust passes.
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        # Set once the register cache has caught up and the first rebalance (with table
        # recovery) is complete: from then on events are processed as they arrive.
        self.ready = asyncio.Event()
        self._after_rebalance: asyncio.Task[None] | None = None
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
        await self.enrich_stage.catch_up()

    async def _know_changelogs(self) -> None:
        """faust places a table write (use_partitioner) by its producer's metadata, which
        lacks a changelog the producer has not written to yet (seen on Apache Kafka):
        fetch it before the first write."""
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        for table in (self.handled, self.pending):
            await producer.partitions_for(table.changelog_topic.get_topic_name())

    def _unwritable(self, out: Output, exc: BaseException) -> Output:
        """The dead letter of an input whose output the broker will never take."""
        source = out.source
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
            (k, v + note.encode() if k == "dlq.error_message" else v) for k, v in out.headers or []
        ]
        return Output(out.topic, key[:keep], value[:keep], headers)

    # --- enrich stage and R16 ----------------------------------------------------------

    async def _enrich_stream(self, stream: Any) -> None:
        await self.cache.ready.wait()  # never evaluate against a half-read register topic
        await self._know_changelogs()
        async for events in stream.take_events(
            self.s.enrich_batch_max, within=self.s.enrich_batch_window_s
        ):
            try:
                await self.enrich_stage.handle(events)  # take_events acks the batch after
            except Exception as exc:  # a bug met by some event: find it, the rest go on
                log.exception("enrich_batch_crashed", events=len(events), error=repr(exc))
                await self.enrich_stage.handle_one_by_one(events)

    async def _reevaluate(self, snapshot: RegisterSnapshot) -> None:
        """A newer snapshot arrived: evaluate the tenant's waiting rejections again (R16)."""
        if self.ready.is_set():  # before that, tables are not recovered: see catch_up
            await self.enrich_stage.reevaluate(snapshot.tenant_id)

    # --- post stage ----------------------------------------------------------------------

    async def _post_stream(self, stream: Any) -> None:
        manual = stream.noack()  # acked per payment, once its outcome is out, in order
        acks = OrderedAcks(manual.ack, lambda: int(self.app.rebalancing_count))
        await self.post_stage.run(manual.events(), acks)
