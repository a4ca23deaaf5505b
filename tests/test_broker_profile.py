"""The broker profile: Tansu's workarounds apply to Tansu alone, never to Apache Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Broker
from worker.config import Settings, from_env
from worker.stream.broker_kind import probe
from worker.stream.faust_app import make_app
from worker.stream.topics import (
    HANDLED_TABLE,
    PENDING_TABLE,
    changelog_topic,
    leader_topic,
    topic_specs,
)


def test_apache_kafka_profile_has_no_tansu_workaround() -> None:
    p = Settings(broker_kind="kafka").profile()
    assert not p.one_record_batches
    assert p.session_timeout_s >= 10  # not Tansu's 2 s
    assert p.idempotent_producers
    assert (p.replication_factor, p.min_insync_replicas) == (3, 2)


def test_tansu_profile_carries_the_workarounds() -> None:
    p = Settings().embedded().profile()
    assert p.one_record_batches and p.session_timeout_s == 2.0
    assert not p.idempotent_producers  # Tansu cannot start an idempotent producer
    assert (p.replication_factor, p.min_insync_replicas) == (1, 1)


def test_a_setting_given_explicitly_wins_over_the_profile() -> None:
    s = from_env({"FLYT_BROKER_KIND": "kafka", "FLYT_REPLICATION_FACTOR": "1"})
    assert s.profile().replication_factor == 1
    assert s.profile().min_insync_replicas == 2
    blank = from_env({"FLYT_BROKER_KIND": "kafka", "FLYT_SESSION_TIMEOUT_S": ""})
    assert blank.profile().session_timeout_s == 45.0


def test_an_unresolved_broker_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not resolved"):
        Settings().profile()


def test_faust_app_on_apache_kafka_batches_normally_and_is_idempotent() -> None:
    app = make_app(Settings(broker_kind="kafka"), "127.0.0.1:1")
    assert app.conf.producer_max_batch_size != 1
    assert app.conf.broker_session_timeout == 45.0
    assert app.conf.topic_replication_factor == 3
    assert app.conf.producer_acks == -1
    producer = app.transport.create_producer()
    assert producer._settings_extra()["enable_idempotence"] is True


def test_faust_app_on_tansu_sends_one_record_batches_without_idempotence() -> None:
    app = make_app(Settings().embedded(), "127.0.0.1:1")
    assert app.conf.producer_max_batch_size == 1
    assert app.conf.broker_session_timeout == 2.0
    producer = app.transport.create_producer()
    assert "enable_idempotence" not in producer._settings_extra()


def test_every_topic_the_worker_creates_is_replicated_per_the_profile() -> None:
    s = Settings(broker_kind="kafka", app_id="flyt-x")
    specs = topic_specs(s)
    names = {t.name for t in specs}
    assert leader_topic(s) in names  # faust's assignor topic too
    for table in (HANDLED_TABLE, PENDING_TABLE):  # and its changelogs, compacted
        [changelog] = [t for t in specs if t.name == changelog_topic(s, table)]
        assert changelog.config["cleanup.policy"] == "compact"
    for spec in specs:
        assert spec.replication_factor == 3
        assert spec.config["min.insync.replicas"] == "2"


@pytest.mark.integration
def test_the_broker_kind_is_read_from_the_broker_itself(broker: Broker) -> None:
    facts = probe(broker.bootstrap)
    assert facts.kind == broker.kind
    assert facts.brokers == broker.brokers


def test_faust_keeps_its_data_folder_out_of_the_working_directory() -> None:
    app = make_app(Settings(broker_kind="kafka", app_id="flyt-datadir"), "127.0.0.1:1")
    datadir = Path(app.conf.datadir).resolve()
    assert datadir.name == "flyt-datadir-data"
    assert Path.cwd().resolve() not in datadir.parents  # issue 14: no folders in the checkout
