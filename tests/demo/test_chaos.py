"""The reliability campaign (`python -m worker chaos`, issue 10): its verdict (the one ledger
verdict, sorted into what the summary counts) on hand-made outcomes, each way of breaking
R14 and R18 caught; and a small campaign on Tansu, run as an operator runs it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.processes import subprocess_env
from worker.demo.chaos import ChaosOptions, ChaosUsageError, Kill, check_r14, recovery
from worker.demo.watcher import Key

A: Key = ("t-a", "P-1")
B: Key = ("t-a", "P-2")
C: Key = ("t-b", "P-3")


def voucher(key: Key, amount: str = "100.00", db_id: int = 1) -> list[dict[str, Any]]:
    """R18: the expense line and the counter line of one payment."""
    t, p = key
    return [
        {"dbId": db_id, "extIdentifier": f"flyt:{t}:{p}:1", "amount": amount},
        {"dbId": db_id + 1, "extIdentifier": f"flyt:{t}:{p}:2", "amount": f"-{amount}"},
    ]


def check(
    ledger: list[dict[str, Any]],
    receipts: dict[Key, int] | None = None,
    rejections: dict[Key, list[str]] | None = None,
    dead_letters: dict[Key, list[str]] | None = None,
    core_rejects: set[Key] | None = None,
) -> Any:
    return check_r14(
        {A, B, C},
        core_rejects or set(),
        receipts or {},
        rejections or {},
        dead_letters or {},
        ledger,
    )


def test_one_outcome_each_passes() -> None:
    v = check(
        voucher(A),
        receipts={A: 2},  # a receipt twice (a kill before the commit): one posting still
        rejections={B: ["MISSING_ACCOUNT"]},
        dead_letters={C: ["unknown_outcome"]},
        core_rejects={B},
    )
    assert v.ok
    assert (v.posted, v.rejected, v.dead_lettered) == (1, 1, 1)
    assert not v.lost and not v.double_posted


def test_a_payment_without_any_outcome_is_lost() -> None:
    v = check(voucher(A), receipts={A: 1}, rejections={B: ["MISSING_ACCOUNT"]}, core_rejects={B})
    assert not v.ok
    assert v.lost_keys == [C]
    assert v.lost == ["t-b P-3: no outcome"]


def test_a_receipt_without_lines_in_xledger_is_lost() -> None:
    v = check(voucher(A), receipts={A: 1, B: 1}, dead_letters={C: ["transient"]})
    assert v.lost_keys == [B]
    assert "a receipt, but no line in Xledger" in v.lost[0]


def test_lines_in_the_ledger_twice_are_a_double_post() -> None:
    ledger = voucher(A) + voucher(A, db_id=9)
    v = check(ledger, receipts={A: 1}, rejections={B: ["X"]}, dead_letters={C: ["transient"]})
    assert not v.ok
    assert len(v.double_posted) == 1 and "in_xledger_twice" in v.double_posted[0]
    assert v.posted == 1  # the payment is counted once, under its outcome


def test_a_receipt_and_a_dlq_record_are_two_outcomes() -> None:
    v = check(
        voucher(A),
        receipts={A: 1},
        rejections={B: ["X"]},
        dead_letters={A: ["unknown_outcome"], C: ["transient"]},
        core_rejects={B},
    )
    assert not v.ok
    assert v.double_posted == ["t-a P-1: two_outcomes: dead_lettered and posted"]


def test_a_receipt_and_a_dlq_record_without_ledger_lines_are_caught_too() -> None:
    v = check([], receipts={A: 1}, dead_letters={A: ["unknown_outcome"], B: ["x"], C: ["x"]})
    assert len(v.double_posted) == 1 and "dead_lettered and posted" in v.double_posted[0]


def test_an_xledger_refusal_with_its_dlq_record_is_one_outcome_rejected() -> None:
    # Before issue 10 a refusal wrote a rejection and a DLQ record `refused`: one outcome.
    v = check(
        voucher(A),
        receipts={A: 1},
        rejections={B: ["XLEDGER_REFUSED"]},
        dead_letters={B: ["refused"], C: ["transient"]},
    )
    assert v.ok, v
    assert (v.posted, v.rejected, v.dead_lettered) == (1, 1, 1)


def test_rejected_and_dead_lettered_conflict() -> None:
    v = check(
        voucher(A),
        receipts={A: 1},
        rejections={B: ["MISSING_ACCOUNT"]},
        dead_letters={B: ["transient"], C: ["transient"]},
        core_rejects={B},
    )
    assert not v.ok and len(v.conflicting) == 1


def test_r18_a_voucher_must_be_two_balanced_lines_of_a_betalt_payment() -> None:
    unbalanced = voucher(A)
    unbalanced[1]["amount"] = "-99.00"
    stranger = voucher(("t-x", "P-9"), db_id=50)
    v = check(
        unbalanced + voucher(B)[:1] + stranger, receipts={A: 1, B: 1}, dead_letters={C: ["x"]}
    )
    assert not v.ok
    text = "\n".join(v.ledger_problems)
    assert "unbalanced" in text and "lines 1 in Xledger" in text and "flyt:t-x:P-9:1" in text


def test_an_outcome_the_core_would_not_give_is_unexpected() -> None:
    v = check(
        voucher(A),
        receipts={A: 1},
        rejections={B: ["UNKNOWN_TENANT"]},  # the core posts B
        dead_letters={C: ["x"]},
        core_rejects={A},  # the core rejects A
    )
    assert len(v.unexpected) == 2 and not v.ok


def test_broker_kills_on_tansu_are_refused_with_a_reason() -> None:
    with pytest.raises(ChaosUsageError, match="needs --broker kafka"):
        ChaosOptions(broker="tansu", broker_kills=1).check()
    with pytest.raises(ChaosUsageError, match="unknown fault profile"):
        ChaosOptions(profile="nope").check()


def test_the_cli_says_so_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "chaos", "--broker-kills", "1"],
        capture_output=True,
        text=True,
        env=subprocess_env({}),
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs --broker kafka" in done.stderr and "Traceback" not in done.stderr


KEYS = {
    "events",
    "betalt",
    "posted",
    "rejected",
    "dead_lettered",
    "lost",
    "double_posted",
    "kills",
    "broker_kills",
    "xledger_requests",
    "recovery_s_max",
}


def marked(mark: str) -> list[int]:
    """Processes whose environment carries this mark: what a campaign started and left."""
    needle = f"CHAOS_TEST_MARK={mark}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:
            pass  # gone, or not ours to read
    return found


@pytest.mark.integration
def test_a_small_campaign_on_tansu_loses_nothing_and_posts_nothing_twice(tmp_path: Path) -> None:
    ledger_out = tmp_path / "ledger.json"
    mark = secrets.token_hex(6)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "chaos",
            "--events",
            "300",
            "--kills",
            "2",
            "--workers",
            "2",
            "--rate",
            "30",
            "--ledger-out",
            str(ledger_out),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env({"CHAOS_TEST_MARK": mark}),
        timeout=900,
    )
    assert marked(mark) == []  # the broker, the workers: all stopped
    print(done.stderr[-4000:])
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary.keys() >= KEYS
    assert summary["events"] == 300 and summary["kills"] == 2
    assert summary["lost"] == 0 and summary["double_posted"] == 0
    accounted = summary["posted"] + summary["rejected"] + summary["dead_lettered"]
    assert accounted == summary["betalt"]
    assert summary["bad_dead_lettered"] == summary["bad_lines"] == 3
    ledger = json.loads(ledger_out.read_text())
    assert len(ledger) == 2 * summary["posted"]  # two lines per posted payment (R18)
    # Each worker's own log, with every start the campaign made.
    logs = sorted((tmp_path / "logs").glob("worker-*.log"))
    assert len(logs) == 2
    starts = sum(p.read_text(errors="replace").count("=== chaos: start") for p in logs)
    assert starts == 2 + 2


@pytest.mark.integration
def test_sigterm_mid_campaign_stops_every_process_it_started(tmp_path: Path) -> None:
    mark = secrets.token_hex(6)
    logs = str(tmp_path / "logs")  # an interrupted run keeps its logs: here, not in /tmp
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "chaos",
            "--events",
            "3000",
            "--kills",
            "0",
            "--log-dir",
            logs,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env({"CHAOS_TEST_MARK": mark}),
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # until the workers run and the events flow
            seen.append(line)
            if "feeding" in line:
                break
        assert any("feeding" in line for line in seen), "".join(seen)
        assert len(marked(mark)) >= 4  # itself, Tansu and the two workers
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert marked(mark) == []


def test_recovery_is_the_longest_wait_from_a_kill_to_the_next_receipt() -> None:
    kills = [Kill("w0", 100.0), Kill("w1", 200.0, tenant="t-b"), Kill("late", 900.0)]
    receipts = [(99.0, "t-a"), (103.5, "t-a"), (201.0, "t-a"), (207.25, "t-b")]
    # The kill after the last receipt has nothing to measure.
    assert recovery(kills, receipts) == (3.5, 7.25)
