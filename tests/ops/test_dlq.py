"""Operators inspect and replay the DLQ (`python -m worker dlq …`), on a real broker, and a
replay goes through the real worker: a posted payment is not posted again, and a poison
record stops at the replay limit."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import pytest

from tests.brokers import Broker
from tests.ops.helpers import acli, cli, json_lines, ops_settings, records, send
from tests.stream_helpers import prepare
from tests.waiting import until_async
from worker.config import Settings
from worker.demo.events import generate_events
from worker.demo.harness import start_demo_sandbox
from worker.demo.snapshots import demo_snapshot_dicts
from worker.devenv.feed import event_records, publish
from worker.engine.topics import ensure_topics
from worker.pipeline.dead_letters import dlq_headers
from worker.pipeline.topics import topic_specs
from worker.pipeline.wiring import Pipeline
from worker.runtime import make_client

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
MIN = 60_000


def body(tenant: str, payment: str) -> bytes:
    return json.dumps(
        {"schema_version": 1, "tenant_id": tenant, "payment_id": payment, "note": "ø"}
    ).encode()


async def dead_letter(
    broker: Broker,
    s: Settings,
    value: bytes,
    *,
    reason: str,
    stage: str,
    age_min: int,
    key: bytes = b"k",
    extra: list[tuple[str, bytes]] | None = None,
    replay_count: int | None = None,
) -> str:
    """A DLQ record as the worker's one policy writes it; returns its position."""
    topic = s.topics.payments if stage == "enrich" else s.topics.submissions
    headers = dlq_headers(
        extra or [],
        reason=reason,  # type: ignore[arg-type]
        error_class="Test",
        error_message=f"{reason} in {stage}",
        stage=stage,
        topic=topic,
        partition=0,
        offset=7,
    )
    if replay_count is not None:
        headers += [("dlq.replay_count", str(replay_count).encode()), ("dlq.replayed_by", b"u-0")]
    p, o = await send(broker, s.topics.dlq, key, value, headers, NOW_MS - age_min * MIN)
    return f"{p}@{o}"


UNREADABLE = b"\xff\x1b[2J" + b"x" * 4995  # not UTF-8, a terminal escape, 5000 bytes


@pytest.fixture
async def letters(broker: Broker) -> tuple[Settings, dict[str, str]]:
    """Four dead letters: two tenants, both stages, old and new, one unreadable; written in
    time order, as the worker writes them (its producer stamps each when it is sent)."""
    s = ops_settings(broker, "dlqtools")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    pos = {
        "P-1": await dead_letter(
            broker, s, body("t-lillevik", "P-1"), reason="invalid", stage="enrich", age_min=180
        ),
        "bad": await dead_letter(
            broker, s, UNREADABLE, reason="invalid", stage="enrich", age_min=120
        ),
        "P-2": await dead_letter(
            broker,
            s,
            body("t-lillevik", "P-2"),
            reason="unknown_outcome",
            stage="post",
            age_min=10,
        ),
        "P-3": await dead_letter(
            broker, s, body("t-vestfold-bv", "P-3"), reason="auth", stage="post", age_min=5
        ),
    }
    return s, pos


def listed(broker: Broker, s: Settings, *args: str) -> list[str]:
    out = cli(broker, s, "dlq", "list", "--json", *args)
    if out.returncode == 3:
        return []
    assert out.returncode == 0, out.stderr
    return [row["position"] for row in json_lines(out.stdout)]


# --- list, show, stats --------------------------------------------------------------------------


FILTERS = [
    (["--tenant", "t-lillevik"], {"P-1", "P-2"}),
    (["--payment", "P-3"], {"P-3"}),
    (["--reason", "invalid"], {"P-1", "bad"}),
    (["--stage", "post"], {"P-2", "P-3"}),
    (["--since", "1h"], {"P-2", "P-3"}),
    (["--until", "1h"], {"P-1", "bad"}),
    (["--tenant", "t-lillevik", "--stage", "post"], {"P-2"}),
    (["--since", "2026-01-01", "--reason", "auth"], {"P-3"}),
]


async def test_every_filter_narrows_the_list_to_its_records(
    broker: Broker, letters: tuple[Settings, dict[str, str]]
) -> None:
    s, pos = letters
    for args, expected in FILTERS:
        got = await asyncio.to_thread(listed, broker, s, *args)
        assert sorted(got) == sorted(pos[k] for k in expected), args


async def test_list_is_newest_first_and_limit_keeps_the_newest(
    broker: Broker, letters: tuple[Settings, dict[str, str]]
) -> None:
    s, pos = letters
    assert listed(broker, s) == [pos["P-3"], pos["P-2"], pos["bad"], pos["P-1"]]
    assert listed(broker, s, "--limit", "2") == [pos["P-3"], pos["P-2"]]
    [row] = json_lines(cli(broker, s, "dlq", "list", "--json", "--payment", "P-2").stdout)
    assert row["tenant_id"] == "t-lillevik" and row["stage"] == "post"
    assert row["reason"] == "unknown_outcome" and row["message"] == "unknown_outcome in post"
    # Written 10 minutes back; the module's records may have waited a while since.
    assert row["replay_count"] == 0 and row["age"].endswith("m") and int(row["age"][:-1]) >= 9
    table = cli(broker, s, "dlq", "list")
    assert table.returncode == 0 and "4 of 4 matching dead letter(s)" in table.stdout
    assert "\x1b" not in table.stdout


async def test_nothing_found_is_exit_3_and_a_bad_time_is_a_usage_error(
    broker: Broker, letters: tuple[Settings, dict[str, str]]
) -> None:
    s, _ = letters
    none = cli(broker, s, "dlq", "list", "--tenant", "t-nobody")
    assert none.returncode == 3 and "no dead letter" in none.stderr and not none.stdout
    bad = cli(broker, s, "dlq", "list", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "30m, 2h, 7d" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli(broker, s, "dlq", "list", "--topic", "no.such.dlq")
    assert missing.returncode == 1 and "no topic no.such.dlq" in missing.stderr


async def test_show_escapes_and_cuts_an_unreadable_value_and_says_its_length(
    broker: Broker, letters: tuple[Settings, dict[str, str]]
) -> None:
    s, pos = letters
    out = cli(broker, s, "dlq", "show", pos["bad"])
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout  # a record cannot drive the operator's terminal
    assert "\\xff\\x1b[2J" in out.stdout
    assert "5000 bytes" in out.stdout and "first 2000 characters shown" in out.stdout
    assert "dlq.reason: invalid" in out.stdout
    good = cli(broker, s, "dlq", "show", pos["P-2"], "--json")
    shown = json.loads(good.stdout)
    assert shown["value"] == json.loads(body("t-lillevik", "P-2")) and shown["value_parses"]
    assert ["dlq.stage", "post"] in shown["headers"]
    pretty = cli(broker, s, "dlq", "show", pos["P-2"]).stdout
    assert '    "payment_id": "P-2",' in pretty and '"note": "ø"' in pretty
    assert cli(broker, s, "dlq", "show", "9@999").returncode == 3
    assert cli(broker, s, "dlq", "show", "nine").returncode == 2


async def test_stats_counts_by_reason_tenant_and_stage(
    broker: Broker, letters: tuple[Settings, dict[str, str]]
) -> None:
    s, pos = letters
    st = json.loads(cli(broker, s, "dlq", "stats", "--json").stdout)
    assert st["total"] == 4
    assert st["by_reason"] == {"invalid": 2, "unknown_outcome": 1, "auth": 1}
    assert st["by_tenant"] == {"t-lillevik": 2, "(unknown)": 1, "t-vestfold-bv": 1}
    assert st["by_stage"] == {"enrich": 2, "post": 2}
    assert st["oldest"]["position"] == pos["P-1"] and st["newest"]["position"] == pos["P-3"]


# --- replay -------------------------------------------------------------------------------


def ends(broker: Broker, s: Settings) -> dict[str, int]:
    t = s.topics
    got = records(broker, t.payments, t.submissions, t.dlq, t.audit)
    return {topic: len(rs) for topic, rs in got.items()}


async def test_replay_without_okonomi_is_refused_and_audited_and_sends_nothing(
    broker: Broker, letters: tuple[Settings, dict[str, str]]
) -> None:
    s, _ = letters
    before = ends(broker, s)
    out = cli(
        broker, s, "dlq", "replay", "--all", "--actor", "u-1", "--role", "Innstillinger", "--yes"
    )
    assert out.returncode == 4 and "Økonomi" in out.stderr and "Traceback" not in out.stderr
    after = ends(broker, s)
    assert after[s.topics.payments] == before[s.topics.payments]
    assert after[s.topics.submissions] == before[s.topics.submissions]
    [audit] = [r.json() for r in records(broker, s.topics.audit)[s.topics.audit]]
    assert audit and audit["outcome"] == "refused" and audit["actor"] == "u-1"
    assert audit["action"] == "dlq.replay" and "Økonomi" in audit["reason"]


async def test_dry_run_describes_every_record_and_changes_nothing(
    broker: Broker, letters: tuple[Settings, dict[str, str]]
) -> None:
    s, pos = letters
    before = ends(broker, s)
    out = cli(
        broker, s, "dlq", "replay", "--all", "--dry-run", "--actor", "u-1", "--role", "Økonomi"
    )
    assert out.returncode == 0, out.stderr
    assert "4 of 4 dead letter(s) would be sent as u-1" in out.stdout
    for p in pos.values():
        assert p in out.stdout
    assert f"→ {s.topics.submissions}" in out.stdout and f"→ {s.topics.payments}" in out.stdout
    assert "(dlq.replay_count=1)" in out.stdout and "nothing was sent" in out.stdout
    assert ends(broker, s) == before


async def test_replay_keeps_key_value_and_headers_byte_for_byte(broker: Broker) -> None:
    s = ops_settings(broker, "dlqbytes")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    extra = [("trace-id", b"abc"), ("bin", b"\x00\xff\x1b"), ("trace-id", b"second")]
    value = b'{"tenant_id": "t-lillevik", "payment_id": "P-9", "x": "\xc3\xb8"}'
    at = await dead_letter(
        broker,
        s,
        value,
        reason="unknown_outcome",
        stage="post",
        age_min=1,
        key=b"\x01k",
        extra=extra,
    )
    [original] = records(broker, s.topics.dlq)[s.topics.dlq]
    out = cli(
        broker, s, "dlq", "replay", "--at", at, "--actor", "u-17", "--role", "Økonomi", "--yes"
    )
    assert out.returncode == 0, out.stderr
    [sent] = records(broker, s.topics.submissions)[s.topics.submissions]
    assert sent.key == b"\x01k" and sent.value == value
    replay_headers = [("dlq.replay_count", b"1"), ("dlq.replayed_by", b"u-17")]
    assert sent.headers == [*original.headers, *replay_headers]
    [audit] = [r.json() for r in records(broker, s.topics.audit)[s.topics.audit]]
    assert audit and audit["outcome"] == "done"
    [item] = audit["items"]
    assert item["outcome"] == "sent" and item["source"] == f"{s.topics.dlq}/{at}"
    assert item["sent_to"].startswith(f"{s.topics.submissions}/")


async def test_a_record_replayed_to_the_limit_is_refused_by_header_or_by_audit_trail(
    broker: Broker,
) -> None:
    s = ops_settings(broker, "dlqcap")
    await ensure_topics(broker.bootstrap, topic_specs(s))
    tired = await dead_letter(
        broker,
        s,
        body("t-lillevik", "P-7"),
        reason="transient",
        stage="post",
        age_min=1,
        replay_count=3,
    )
    out = cli(
        broker, s, "dlq", "replay", "--at", tired, "--actor", "u-17", "--role", "Økonomi", "--yes"
    )
    assert out.returncode == 4 and "already replayed 3 time(s), the limit is 3" in out.stdout
    assert not records(broker, s.topics.submissions)[s.topics.submissions]

    # A replayed record that fails again comes back without its replay header: the audit
    # trail still knows it by its content.
    fresh = await dead_letter(
        broker, s, body("t-lillevik", "P-8"), reason="transient", stage="post", age_min=1
    )
    ok = cli(
        broker,
        s,
        "dlq",
        "replay",
        "--at",
        fresh,
        "--actor",
        "u-17",
        "--role",
        "Økonomi",
        "--yes",
        FLYT_DLQ_MAX_REPLAYS="1",
    )
    assert ok.returncode == 0, ok.stderr
    again = await dead_letter(
        broker, s, body("t-lillevik", "P-8"), reason="transient", stage="post", age_min=0
    )
    refused = cli(
        broker,
        s,
        "dlq",
        "replay",
        "--at",
        again,
        "--actor",
        "u-17",
        "--role",
        "Økonomi",
        "--yes",
        FLYT_DLQ_MAX_REPLAYS="1",
    )
    assert refused.returncode == 4 and "already replayed 1 time(s)" in refused.stdout
    assert len(records(broker, s.topics.submissions)[s.topics.submissions]) == 1


# --- through the worker -------------------------------------------------------------------------


async def test_replays_through_the_worker_post_nothing_twice_and_stop_a_poison_record(
    broker: Broker,
) -> None:
    s = ops_settings(broker, "dlqworker")
    snapshots = demo_snapshot_dicts()
    await prepare(s, snapshots)
    await ensure_topics(broker.bootstrap, topic_specs(s))
    sandbox, tokens = await start_demo_sandbox()
    s = replace(s, sandbox=True, xledger_endpoint_override=sandbox.url, post_batch_window_s=0.05)
    pipeline = Pipeline(s, broker.bootstrap, make_client(s, tokens))
    t = s.topics
    event = next(
        e
        for e in generate_events(60, seed=11)
        if e["status"] == "Betalt" and e["tenant_id"] == "t-vestfold-bv"
    )
    ext = f"flyt:{event['tenant_id']}:{event['payment_id']}:"
    replay = ("dlq", "replay", "--actor", "u-17", "--role", "Økonomi", "--yes", "--at")

    def receipts() -> list[dict]:
        got = records(broker, t.receipts)[t.receipts]
        return [b for r in got if (b := r.json()) and b["payment_id"] == event["payment_id"]]

    try:
        await pipeline.start()
        await publish(broker.bootstrap, t.payments, event_records([event]))
        await until_async(lambda: asyncio.to_thread(receipts), 60, "the payment's receipt")
        assert len([x for x in sandbox.ledger() if x["extIdentifier"].startswith(ext)]) == 2

        # Xledger posted it, but the post stage never heard (commit-then-fail): it gave up
        # and dead-lettered the submission. An operator replays it.
        [submission] = [
            r
            for r in records(broker, t.submissions)[t.submissions]
            if (r.json() or {}).get("payment_id") == event["payment_id"]
        ]
        headers = dlq_headers(
            submission.headers,
            reason="unknown_outcome",  # type: ignore[arg-type]
            error_class="Xledger unknown_outcome",
            error_message="post failed 8 times: read timeout",
            stage="post",
            topic=t.submissions,
            partition=submission.partition,
            offset=submission.offset,
            attempts=8,
        )
        p, o = await send(broker, t.dlq, submission.key, submission.value, headers)
        out = await acli(broker, s, *replay, f"{p}@{o}")
        assert out.returncode == 0, out.stderr

        async def second_receipt() -> list[dict]:
            got = await asyncio.to_thread(receipts)
            return got if len(got) == 2 else []

        first, second = await until_async(second_receipt, 60, "the replayed submission's outcome")
        assert not first["already_present"] and second["already_present"]  # found, not posted
        assert [x["dbId"] for x in second["lines"]] == [x["dbId"] for x in first["lines"]]
        assert len([x for x in sandbox.ledger() if x["extIdentifier"].startswith(ext)]) == 2

        # A poison record: every replay fails again; the limit (2 here) stops the loop.
        await publish(broker.bootstrap, t.payments, [(b"poison", b"not json at all")])

        def poison() -> list[str]:
            got = records(broker, t.dlq)[t.dlq]
            return [r.position for r in got if r.value == b"not json at all"]

        async def poison_letters(n: int) -> list[str]:
            got = await asyncio.to_thread(poison)
            return got if len(got) == n else []

        for n in (1, 2):
            found = await until_async(
                lambda n=n: poison_letters(n), 60, f"dead letter number {n} of the poison record"
            )
            out = await acli(broker, s, *replay, found[-1], FLYT_DLQ_MAX_REPLAYS="2")
            assert out.returncode == 0, out.stderr
        third = await until_async(lambda: poison_letters(3), 60, "the poison record's third letter")
        refused = await acli(broker, s, *replay, third[-1], FLYT_DLQ_MAX_REPLAYS="2")
        assert refused.returncode == 4 and "already replayed 2 time(s)" in refused.stdout
    finally:
        await pipeline.stop()
        await pipeline.client.aclose()
        await sandbox.stop()
