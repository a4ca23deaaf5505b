"""The faust app, configured from the broker profile (`Settings.profile`).

Our own transport subclasses faust's aiokafka driver, so producer settings that faust
does not expose (idempotence) are set where faust builds its producers, not in a fork.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

from worker.config import Settings


class _IdempotentProducer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Any:
        # A retried send is written once: changelog records are not duplicated.
        return {**super()._settings_extra(), "enable_idempotence": True}


class _IdempotentTransport(faust_aiokafka.Transport):
    Producer = _IdempotentProducer


class WorkerApp(faust.App):
    """faust.App whose producers are idempotent where the broker supports it."""

    def __init__(self, *args: Any, idempotent: bool = False, **kwargs: Any) -> None:
        self._idempotent = idempotent
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        if not self._idempotent:
            return super()._new_transport()
        return _IdempotentTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> TransportT:
        if not self._idempotent:
            return super()._new_producer_transport()
        return _IdempotentTransport(self.conf.broker_producer, self)


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
