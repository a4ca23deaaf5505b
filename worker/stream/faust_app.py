"""The faust app, configured from the broker profile (`Settings.profile`).

Our own transport subclasses faust's aiokafka driver, so what faust does not expose is
set where faust builds its clients, not in a fork: idempotent producers, and a consumer
whose commit never passes an event nobody processed (issue 14).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT

from worker.config import Settings
from worker.stream.topics import LARGE_RECORD_BYTES

# The longest a fetch waits for records on an idle partition; a floor under each hop's
# latency where the broker does not answer early. More idle fetches cost next to nothing.
FETCH_MAX_WAIT_MS = 100


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


class _Consumer(faust_aiokafka.Consumer):
    """faust's consumer with the commit rule we rely on: only a contiguous run of
    acknowledged offsets, starting at the committed one, is committed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _NoReadOffsets()

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Never mark offsets acknowledged that were not processed (see _NoReadOffsets).
        return None

    def _new_offset(self, tp: TP) -> int | None:
        # faust compares the first acknowledged offset with the committed one as if the
        # commit named the last processed record; it names the next one to read, so faust
        # let one unprocessed offset through (and ignores a commit at 0).
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and min(acked) > committed:
            return None
        return super()._new_offset(tp)


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

    def __init__(self, *args: Any, idempotent: bool = False, **kwargs: Any) -> None:
        self._idempotent = idempotent
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
