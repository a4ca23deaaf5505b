"""The faust app, configured from the broker profile (`Settings.profile`).

Our own transport subclasses faust's aiokafka driver, so what faust does not expose is
set where faust builds its clients, not in a fork: idempotent producers, and a consumer
whose commit never passes an event nobody processed (issue 14).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT

from worker import logs
from worker.config import Settings
from worker.stream.topics import LARGE_RECORD_BYTES

# The longest a fetch waits for records on an idle partition; a floor under each hop's
# latency where the broker does not answer early. More idle fetches cost next to nothing.
FETCH_MAX_WAIT_MS = 100


log = logs.get("worker.stream")


class _NoReadOffsets(MutableMapping[TP, int | None]):
    """faust's per-partition "last offset read", kept empty: every fetched record is delivered.

    faust drops a record below that mark and treats a jump above it as a hole already
    acknowledged. After a rebalance both misfire: a record fetched before the seek back to
    the committed offset arrives after it, moves the mark ahead, the records re-read from
    the commit are dropped, and the jump is "acknowledged" though nobody processed it.
    faust then committed past payments that were never enriched (issue 14). Our acked
    topics have no holes (delete policy, no transactions), and a record delivered twice is
    harmless: the handled table (R15) and the lookup before posting absorb it.
    """

    def __getitem__(self, tp: TP) -> int | None:
        return None

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        pass

    def __delitem__(self, tp: TP) -> None:
        pass

    def __iter__(self) -> Iterator[TP]:
        return iter(())

    def __len__(self) -> int:
        return 0


# How long the first offset after a commit may stay unacknowledged while later ones are
# acknowledged and nobody holds it, before the partition is read again from the commit.
HOLE_PATIENCE_S = 10.0


class _Consumer(faust_aiokafka.Consumer):
    """faust's consumer with the commit rule we rely on: only a contiguous run of
    acknowledged offsets, starting at the committed one, is committed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _NoReadOffsets()
        self._hole_since: dict[TP, float] = {}
        self._healing: set[TP] = set()
        self._seeking: asyncio.Future[None] | None = None

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Never mark offsets acknowledged that were not processed (see _NoReadOffsets).
        return None

    async def perform_seek(self) -> None:
        """After faust's seek to the committed offsets: a partition the group never
        committed is read from its first offset, and that offset counts as committed.

        Else the commit check below has nothing to compare with, and a worker taking over
        a partition whose first owner died before its first commit could commit from
        wherever its reading began: the chaos campaign lost the payments before it."""
        await super().perform_seek()
        fresh = [
            tp
            for tp in self.assignment()
            if self._committed_offset.get(tp) is None and self.app.topics.acks_enabled_for(tp.topic)
        ]
        if not fresh:
            return
        earliest = await self.earliest_offsets(*fresh)
        for tp in fresh:
            first = earliest.get(tp)
            if first is not None and first >= 0:
                await self.seek(tp, first)
                self._committed_offset[tp] = first

    def _new_offset(self, tp: TP) -> int | None:
        # faust compares the first acknowledged offset with the committed one as if the
        # commit named the last processed record; it names the next one to read, so faust
        # let one unprocessed offset through (and ignores a commit at 0).
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and min(acked) > committed:
            self._mind_the_hole(tp, committed)
            return None  # (committed is None only before perform_seek has run)
        self._hole_since.pop(tp, None)
        return super()._new_offset(tp)

    def _mind_the_hole(self, tp: TP, committed: int) -> None:
        """Later offsets are acknowledged, the committed one is not. Either its event is
        still being processed (wait), or faust delivered it when the stream would not
        take it (during a rebalance) and it will never be: then read the partition again
        from the commit. Reading twice is harmless (R15, and the lookup before posting);
        never reading it stalls the partition's commit for good (seen in the chaos
        campaign: the enrich stage's commit stuck with later events done)."""
        heal = getattr(self.app, "heal_topics", ())
        if tp.topic not in heal or tp in self._healing:
            return
        now = time.monotonic()
        since = self._hole_since.setdefault(tp, now)
        held = any(m.tp == tp and m.offset == committed for m in list(self._unacked_messages))
        if held or now - since < HOLE_PATIENCE_S:
            return
        log.warning(
            "consumer_reads_again", topic=tp.topic, partition=tp.partition, offset=committed
        )
        self._healing.add(tp)
        self._hole_since.pop(tp, None)

        async def seek_back() -> None:
            try:
                await self.seek(tp, committed)
            finally:
                self._healing.discard(tp)

        self._seeking = asyncio.ensure_future(seek_back())  # kept: a task needs a reference


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust hard-codes 1500 ms: a broker that answers a fetch only when the wait is
        # over (Tansu) put up to 1.5 s on every hop (issue 13). Set before start().
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _IdempotentProducer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Any:
        # A retried send is written once: changelog records are not duplicated.
        return {**super()._settings_extra(), "enable_idempotence": True}


class _IdempotentTransport(_Transport):
    Producer = _IdempotentProducer


class WorkerApp(faust.App):
    """faust.App with our consumer, and idempotent producers where the broker supports it."""

    def __init__(
        self,
        *args: Any,
        idempotent: bool = False,
        heal_topics: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> None:
        self._idempotent = idempotent
        # Topics whose stuck first offset is read again (see _Consumer._mind_the_hole):
        # the enrich stage's input. Not the post stage's: a paused tenant holds its first
        # offset on purpose, for minutes.
        self.heal_topics = heal_topics
        super().__init__(*args, **kwargs)

    def _transport_class(self) -> type[_Transport]:
        return _IdempotentTransport if self._idempotent else _Transport

    def _new_transport(self) -> TransportT:
        return self._transport_class()(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> TransportT:
        return self._transport_class()(self.conf.broker_producer, self)


def _data_parent(s: Settings) -> Path:
    # faust makes its data folder but not the folders above it.
    parent = s.data_dir or Path(tempfile.gettempdir()) / "flyt-xledger"
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def make_app(s: Settings, bootstrap: str) -> WorkerApp:
    p = s.profile()
    extra: dict[str, Any] = {}
    if p.one_record_batches:
        extra["producer_max_batch_size"] = 1
    return WorkerApp(
        s.app_id,
        idempotent=p.idempotent_producers,
        heal_topics=frozenset({s.topics.payments}),
        broker=f"kafka://{bootstrap}",
        store="memory://",  # tables are rebuilt from their changelogs on start
        # Nothing durable lives there (memory store): keep it out of the working directory.
        datadir=str(_data_parent(s) / "{conf.id}-data"),
        broker_session_timeout=p.session_timeout_s,
        broker_heartbeat_interval=p.heartbeat_interval_s,
        broker_rebalance_timeout=p.rebalance_timeout_s,
        broker_commit_interval=0.5,
        producer_acks=-1,  # acks=all: with min.insync.replicas, a lost broker loses nothing
        # A table entry keeps its Betalt event (R16); the changelogs take large records.
        producer_max_request_size=LARGE_RECORD_BYTES + 64 * 1024,
        topic_partitions=s.partitions,
        topic_replication_factor=p.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # On shutdown, do not wait for every delivered event to be acknowledged: the
        # ones still queued for posting are simply not committed and come back after a
        # restart, where the lookup before posting makes them harmless.
        stream_wait_empty=False,
        **extra,
    )
