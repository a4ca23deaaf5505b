"""`python -m worker enrich` (contracts.md, last section), run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.factories import event_dict, patch, snapshot_dict
from worker.demo.events import bad_event_lines, generate_events
from worker.demo.snapshots import demo_snapshot_dicts


def run_enrich(
    tmp: Path, snapshots: object, lines: list[str], *extra: str
) -> subprocess.CompletedProcess[str]:
    snap = tmp / "snapshots.json"
    snap.write_text(json.dumps(snapshots, ensure_ascii=False), "utf-8")
    events = tmp / "events.jsonl"
    events.write_text("".join(line + "\n" for line in lines), "utf-8")
    return enrich_cmd(snap, events, *extra)


def enrich_cmd(snapshot: Path, events: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["--snapshot", str(snapshot), "--events", str(events), *extra]
    return subprocess.run(
        [sys.executable, "-m", "worker", "enrich", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def outputs(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_demo_data_gives_one_line_per_event_in_order(tmp_path: Path) -> None:
    events = list(generate_events(500))
    proc = run_enrich(tmp_path, demo_snapshot_dicts(), [json.dumps(e) for e in events])
    assert proc.returncode == 0, proc.stderr
    out = outputs(proc)
    assert [o["event_id"] for o in out] == [e["event_id"] for e in events]
    kinds = {o["outcome"] for o in out}
    assert kinds == {"submission", "rejection", "ignored", "duplicate"}
    for o in out:
        assert {"event_id", "payment_id", "tenant_id", "outcome"} <= set(o)
        if o["outcome"] == "submission":
            assert sum(float(line["amount"]) for line in o["lines"]) == 0
            assert o["dimensions"]["1"] == o["lines"][0]["account"]
        if o["outcome"] == "rejection":
            assert o["reason"] == o["problems"][0]["code"]
        if o["outcome"] == "ignored":
            assert o["status"] != "Betalt"


def test_garbage_lines_are_invalid_and_exit_zero(tmp_path: Path) -> None:
    lines = [*bad_event_lines(40), "\x00\x01", "{", "null", '{"a":' * 5000]
    proc = run_enrich(tmp_path, snapshot_dict(), lines)
    assert proc.returncode == 0, proc.stderr
    out = outputs(proc)
    assert len(out) == len(lines)
    assert {o["outcome"] for o in out} == {"invalid"}
    assert all(o["error"] for o in out)
    assert "Traceback" not in proc.stderr


def test_invalid_line_keeps_its_ids_when_readable(tmp_path: Path) -> None:
    bad = patch(event_dict(), "payment.amount", 17.5)
    out = outputs(run_enrich(tmp_path, snapshot_dict(), [json.dumps(bad)]))
    assert out[0]["event_id"] == "evt-0001" and out[0]["payment_id"] == "P-2026-000123"
    assert "amount" in out[0]["error"]


def test_r17_second_betalt_is_duplicate_other_statuses_ignored(tmp_path: Path) -> None:
    first = event_dict()
    again = {**event_dict(), "event_id": "evt-0002"}
    pending = {**event_dict(), "event_id": "evt-0003", "status": "Godkjent"}
    out = outputs(
        run_enrich(tmp_path, snapshot_dict(), [json.dumps(x) for x in (first, again, pending)])
    )
    assert [o["outcome"] for o in out] == ["submission", "duplicate", "ignored"]
    assert out[2]["status"] == "Godkjent"


def test_highest_valid_version_wins_in_any_order_and_refusals_go_to_stderr(tmp_path: Path) -> None:
    v1 = snapshot_dict()
    v2 = patch(patch(v1, "version", 2), "registers.betalingstype.0.value", "V2-ACCOUNT")
    v3_bad = patch(patch(v1, "version", 3), "settings.url", "https://evil.example/graphql")
    proc = run_enrich(tmp_path, [v3_bad, v1, v2], [json.dumps(event_dict())])
    assert proc.returncode == 0
    assert outputs(proc)[0]["dimensions"]["1"] == "V2-ACCOUNT"
    assert "t-test v3 refused" in proc.stderr and "URL_NOT_ALLOWED" in proc.stderr


def test_unknown_tenant_is_a_rejection(tmp_path: Path) -> None:
    ev = {**event_dict(), "tenant_id": "t-nobody"}
    out = outputs(run_enrich(tmp_path, snapshot_dict(), [json.dumps(ev)]))
    assert out[0]["outcome"] == "rejection" and out[0]["reason"] == "UNKNOWN_TENANT"
    assert out[0]["problems"][0]["position"] is None


def test_unreadable_snapshot_file_is_a_clear_error(tmp_path: Path) -> None:
    snap = tmp_path / "s.json"
    snap.write_text("{not json", "utf-8")
    events = tmp_path / "e.jsonl"
    events.write_text("", "utf-8")
    proc = enrich_cmd(snap, events)
    assert proc.returncode != 0
    assert "not JSON" in proc.stderr and "Traceback" not in proc.stderr
    missing = enrich_cmd(tmp_path / "nope.json", events)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr


def test_bad_options_exit_non_zero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "enrich", "--snapshot"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
