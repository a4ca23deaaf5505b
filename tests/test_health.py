"""/healthz and /ready (`worker/health.py`): the heartbeat, the readiness check run at
each beat, and the probes and metrics over HTTP."""

from __future__ import annotations

import httpx

from worker.health import Health, Readiness, serve


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthz_fails_once_the_event_loop_has_been_silent_too_long() -> None:
    clock = FakeClock()
    health = Health(clock=clock, wedged_after_s=30)
    health.beat()
    clock.now += 30
    assert health.liveness() == (True, "alive")
    clock.now += 1
    alive, why = health.liveness()
    assert not alive and "wedged" in why
    assert health.readiness() == (False, why)  # a wedged worker is never ready
    health.beat()
    assert health.liveness() == (True, "alive")


def test_ready_follows_the_check_run_at_each_beat_and_ends_with_unwatch() -> None:
    health = Health(clock=FakeClock())
    assert health.readiness() == (False, "the stream processor is not running")
    state = [Readiness(False, "register cache catching up")]
    health.watch(lambda: state[0])
    health.beat()
    assert health.readiness() == (False, "register cache catching up")
    state[0] = Readiness(True, "ready: 8 input partitions assigned")
    assert not health.readiness()[0]  # not before the loop has run the check
    health.beat()
    assert health.readiness() == (True, "ready: 8 input partitions assigned")
    health.unwatch()
    assert not health.readiness()[0]


def test_a_failing_readiness_check_makes_the_worker_unready_not_the_heartbeat_stop() -> None:
    health = Health(clock=FakeClock())

    def broken() -> Readiness:
        raise KeyError("x")

    health.watch(broken)
    health.beat()
    assert health.readiness() == (False, "readiness check failed: KeyError")
    assert health.liveness()[0]


def test_the_server_answers_the_probes_and_metrics_over_http() -> None:
    clock = FakeClock()
    health = Health(clock=clock, wedged_after_s=30)
    served = serve(0, "127.0.0.1", health)  # no running loop here: no heartbeat task
    base = f"http://127.0.0.1:{served.port}"
    try:
        ready = httpx.get(f"{base}/ready")
        assert (ready.status_code, ready.text) == (503, "the stream processor is not running\n")
        assert httpx.get(f"{base}/healthz").status_code == 200
        health.watch(lambda: Readiness(True, "ready: 2 input partitions assigned"))
        health.beat()
        assert httpx.get(f"{base}/ready").status_code == 200
        metrics = httpx.get(f"{base}/metrics").text
        assert "flyt_worker_ready 1.0" in metrics and "flyt_consumer_lag_seconds" in metrics
        clock.now += 31  # the loop has not beaten for 31 s: wedged
        healthz = httpx.get(f"{base}/healthz")
        assert healthz.status_code == 503 and "wedged" in healthz.text
        assert httpx.get(f"{base}/ready").status_code == 503
    finally:
        served.close()
        health.unwatch()
