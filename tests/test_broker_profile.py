"""The broker profile: Tansu's workarounds apply to Tansu alone, never to Apache Kafka."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.brokers import Broker
from worker.config import RECONCILE_LOOKBACK_DAYS, Settings, from_env
from worker.engine.broker_kind import probe
from worker.pipeline.topics import OUTCOMES, refused_topic, stores, topic_specs
from worker.pipeline.wiring import SettingsConflict, kafka_backend, timings


def test_apache_kafka_profile_has_no_tansu_workaround() -> None:
    p = Settings(broker_kind="kafka").profile()
    assert p.session_timeout_s >= 10  # not Tansu's 2 s
    assert p.idempotent_producers
    assert (p.replication_factor, p.min_insync_replicas) == (3, 2)


def test_tansu_profile_carries_the_workarounds() -> None:
    p = Settings().embedded().profile()
    assert p.session_timeout_s == 2.0
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


def test_the_worker_on_apache_kafka_writes_idempotently_and_on_tansu_cannot() -> None:
    assert kafka_backend(Settings(broker_kind="kafka"), "127.0.0.1:1").idempotent is True
    assert kafka_backend(Settings().embedded(), "127.0.0.1:1").idempotent is False


def test_every_topic_the_worker_creates_is_replicated_per_the_profile() -> None:
    s = Settings(broker_kind="kafka", app_id="flyt-x")
    specs = topic_specs(s)
    names = {t.name for t in specs}
    assert refused_topic(s) in names  # the way back to a payment's state owner too
    for store in stores(s):  # and the state changelogs: compacted, the outcomes too (R14:
        [changelog] = [t for t in specs if t.name == store.changelog]  # never aged out)
        assert changelog.config.get("cleanup.policy", "delete") == "compact"
    assert OUTCOMES in {store.name for store in stores(s)}
    for spec in specs:
        assert spec.replication_factor == 3
        assert spec.config["min.insync.replicas"] == "2"


def test_topics_holding_work_not_done_outlive_a_long_pause() -> None:
    """Issue 19 (8): a tenant paused over a holiday holds its partition's commit on
    purpose; its submissions must not be deleted by retention meanwhile."""
    s = Settings(broker_kind="kafka", app_id="flyt-x")
    by_name = {t.name: t for t in topic_specs(s)}
    # At least a month, and as long as reconcile reads back (a month-end proof, issue 27).
    kept = int(RECONCILE_LOOKBACK_DAYS * 24 * 3600 * 1000)
    assert kept >= 30 * 24 * 3600 * 1000
    t = s.topics  # the outcomes keep as long as the work they answer (reconcile)
    for name in (t.payments, t.submissions, t.dlq, refused_topic(s), t.receipts, t.rejections):
        assert by_name[name].config["retention.ms"] == str(kept)
    longer = {t.name: t for t in topic_specs(replace(s, retention_days=60))}
    assert longer[s.topics.submissions].config["retention.ms"] == str(60 * 24 * 3600 * 1000)


def test_the_rebalance_timeout_must_exceed_a_hand_over() -> None:
    """engine.md: a revoke waits out one Xledger request, then flushes and commits."""
    ok = timings(Settings(broker_kind="kafka"))
    assert ok.hand_over_s == 18.0
    assert ok.membership_window_s == 45.0 - 15.0 - 3.0 - 2.0
    with pytest.raises(SettingsConflict, match="FLYT_REBALANCE_TIMEOUT_S"):
        timings(Settings(broker_kind="kafka", rebalance_timeout_s=10.0))


def test_a_stop_grace_that_cannot_hold_a_hand_over_is_refused() -> None:
    """Issue 26 N1: a stop never cuts a mutation. The grace (10 s on 15664b2, below the 15 s
    request deadline) must hold the deadline, the flush and the leaving."""
    s = Settings(broker_kind="kafka")
    assert timings(s).hand_over_s + 5.0 <= s.stop_grace_s  # the defaults agree
    with pytest.raises(SettingsConflict, match="FLYT_STOP_GRACE_S"):
        timings(replace(s, stop_grace_s=10.0))
    with pytest.raises(SettingsConflict, match="FLYT_STOP_GRACE_S"):
        timings(replace(s, xledger_request_deadline_s=30.0, rebalance_timeout_s=90.0))


def test_a_settle_time_shorter_than_the_request_deadline_is_refused() -> None:
    """R14 (decided 12-06): the lookup after an unknown outcome waits at least as long as
    Xledger may take with the request."""
    s = Settings(broker_kind="kafka")
    assert s.xledger_settle_s == 60.0
    with pytest.raises(SettingsConflict, match="FLYT_XLEDGER_SETTLE_S"):
        timings(replace(s, xledger_settle_s=10.0))


def test_a_short_session_confirms_membership_before_every_mutation() -> None:
    """Tansu's 2 s session is shorter than a request deadline: no window, a commit
    confirms membership right before each mutation."""
    assert timings(Settings().embedded()).membership_window_s == 0.0


@pytest.mark.integration
async def test_the_broker_kind_is_read_from_the_broker_itself(broker: Broker) -> None:
    facts = await probe(broker.bootstrap)
    assert facts.kind == broker.kind
    assert facts.brokers == broker.brokers
