"""The dead-letter queue (`xledger.dlq.v1`) for operators: list, show, count, replay.

A replay sends a record's original key, value and headers back to its original topic,
byte for byte, with `dlq.replay_count` and `dlq.replayed_by` set (contracts.md). It is a
manual transfer: the actor must hold Økonomi (R13). A record replayed `max_replays`
times is refused, so that a poison record cannot loop. A replayed payment that had in
fact been posted is not posted twice: the post stage looks its lines up in Xledger before
posting, and the enrich stage treats a second Betalt event as a duplicate (R17).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from worker.contracts import DlqHeaders
from worker.contracts import headers as wire
from worker.kafka_clients.connection import Bootstrap
from worker.ops import audit
from worker.ops.safe_text import escape
from worker.ops.topic_reader import (
    DEFAULT_TIMEOUT_S,
    ReadStats,
    Record,
    Say,
    read_at,
    read_topics,
    scan,
)
from worker.ops.when import Period, age


@dataclass(frozen=True)
class DeadLetter:
    record: Record

    @property
    def position(self) -> str:
        return self.record.position

    @cached_property
    def dlq(self) -> DlqHeaders | None:
        """The `dlq.*` headers through the contract's model; None when the record does
        not carry a valid set (it was not written by this worker)."""
        try:
            return DlqHeaders.from_kafka(self.record.headers)
        except (ValidationError, UnicodeDecodeError):
            return None

    @cached_property
    def body(self) -> dict[str, Any] | None:
        return self.record.json()

    def _id(self, name: str) -> str | None:
        value = (self.body or {}).get(name)
        return value if isinstance(value, str) else None

    @property
    def tenant_id(self) -> str | None:
        return self._id("tenant_id")

    @property
    def payment_id(self) -> str | None:
        return self._id("payment_id")

    @property
    def stage(self) -> str | None:
        return self.dlq.stage if self.dlq else None

    @property
    def reason(self) -> str | None:
        return str(self.dlq.reason) if self.dlq else None

    @property
    def original(self) -> str | None:
        h = self.dlq
        return f"{h.original_topic}/{h.original_partition}@{h.original_offset}" if h else None

    def fingerprint(self) -> str | None:
        h = self.dlq
        return (
            audit.fingerprint(h.original_topic, self.record.key, self.record.value) if h else None
        )

    def row(self, now: datetime, replays: int) -> dict[str, Any]:
        """One line of `dlq list`: where, how old, whose, why."""
        h = self.dlq
        return {
            "position": self.position,
            "partition": self.record.partition,
            "offset": self.record.offset,
            "dead_lettered_at": self.record.at.isoformat(),
            "age": age(self.record.at, now),
            "tenant_id": self.tenant_id,
            "payment_id": self.payment_id,
            "key": escape(self.record.key.decode("utf-8", "replace")) if self.record.key else None,
            "stage": self.stage,
            "reason": self.reason,
            "error_class": h.error_class if h else None,
            "message": h.error_message if h else "no valid dlq.* headers",
            "original": self.original,
            "attempts": h.attempts if h else None,
            "replay_count": replays,
        }


@dataclass(frozen=True)
class DlqFilter:
    tenants: tuple[str, ...] = ()  # any of them; empty: every tenant
    payment: str | None = None
    reason: str | None = None
    stage: str | None = None
    period: Period = field(default_factory=Period)

    def matches(self, d: DeadLetter) -> bool:
        return (
            (not self.tenants or d.tenant_id in self.tenants)
            and (self.payment is None or d.payment_id == self.payment)
            and (self.reason is None or d.reason == self.reason)
            and (self.stage is None or d.stage == self.stage)
            and self.period.contains_ms(d.record.timestamp_ms)
        )


@dataclass(frozen=True)
class Inventory:
    """Dead letters as chosen from the DLQ now, with the replays the audit trail knows of."""

    letters: list[DeadLetter]
    trail_replays: Counter[str]

    def replays(self, d: DeadLetter) -> int:
        """How often this record was replayed: its header, or the audit trail's count of
        its fingerprint when that is higher (a re-dead-lettered replay loses the header)."""
        header = (d.dlq.replay_count or 0) if d.dlq else 0
        fp = d.fingerprint()
        return max(header, self.trail_replays[fp] if fp else 0)


@dataclass
class Selection:
    """The newest matches (at most the limit), and how many matched and were read."""

    letters: list[DeadLetter]  # newest first
    matched: int
    read: int


def _newest_key(d: DeadLetter) -> tuple[int, int, int]:
    return (d.record.timestamp_ms, d.record.partition, d.record.offset)


def trail(bootstrap: Bootstrap, audit_topic: str | None) -> Counter[str]:
    """Replays by fingerprint, from the audit trail (one small record per command run)."""
    if not audit_topic:
        return Counter()
    got = read_topics(bootstrap, [], optional=[audit_topic])
    return audit.replays_by_fingerprint(got[audit_topic])


def select(
    bootstrap: Bootstrap,
    dlq_topic: str,
    f: DlqFilter,
    limit: int | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Say | None = None,
    stats: ReadStats | None = None,
) -> Selection:
    """The dead letters that match, newest first: only the newest `limit` are kept while
    the DLQ is streamed (the period's offsets only: `topic_reader.scan`)."""
    kept: list[tuple[tuple[int, int, int], DeadLetter]] = []
    matched = 0
    stats = stats if stats is not None else ReadStats()
    for r in scan(
        bootstrap, [dlq_topic], period=f.period, timeout_s=timeout_s, progress=progress, stats=stats
    ):
        d = DeadLetter(r)
        if not f.matches(d):
            continue
        matched += 1
        item = (_newest_key(d), d)
        if limit is None:
            kept.append(item)
        elif len(kept) < limit:
            heapq.heappush(kept, item)
        elif item[0] > kept[0][0]:
            heapq.heapreplace(kept, item)
    chosen = [d for _, d in sorted(kept, key=lambda x: x[0], reverse=True)]
    return Selection(chosen, matched, stats.total)


def at(
    bootstrap: Bootstrap, dlq_topic: str, positions: list[tuple[int, int]], timeout_s: float
) -> tuple[list[DeadLetter], list[str]]:
    """The letters at these positions (each read where it is), and the positions that
    hold none."""
    found = read_at(bootstrap, dlq_topic, positions, timeout_s)
    letters = [DeadLetter(found[p]) for p in positions if p in found]
    missing = [f"{p}@{o}" for p, o in positions if (p, o) not in found]
    return letters, missing


def parse_position(text: str) -> tuple[int, int]:
    p, sep, o = text.strip().partition("@")
    if not (sep and p.isdigit() and o.isdigit()):
        raise ValueError(f"{text!r} is not a position PARTITION@OFFSET (as `dlq list` shows it)")
    return int(p), int(o)


@dataclass
class Tally:
    """Counts by reason, tenant and stage, and the oldest and newest, kept as the DLQ is
    streamed (no record is kept)."""

    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_tenant: Counter[str] = field(default_factory=Counter)
    by_stage: Counter[str] = field(default_factory=Counter)
    oldest: DeadLetter | None = None
    newest: DeadLetter | None = None

    def add(self, d: DeadLetter) -> None:
        self.total += 1
        self.by_reason[d.reason or "(unknown)"] += 1
        self.by_tenant[d.tenant_id or "(unknown)"] += 1
        self.by_stage[d.stage or "(unknown)"] += 1
        if self.oldest is None or _newest_key(d) < _newest_key(self.oldest):
            self.oldest = d
        if self.newest is None or _newest_key(d) > _newest_key(self.newest):
            self.newest = d

    def to_json(self) -> dict[str, Any]:
        def end(d: DeadLetter | None) -> dict[str, Any] | None:
            if d is None:
                return None
            return {"position": d.position, "at": d.record.at.isoformat(), "reason": d.reason}

        return {
            "total": self.total,
            "by_reason": dict(self.by_reason.most_common()),
            "by_tenant": dict(self.by_tenant.most_common()),
            "by_stage": dict(self.by_stage.most_common()),
            "oldest": end(self.oldest),
            "newest": end(self.newest),
        }


def tally(
    bootstrap: Bootstrap,
    dlq_topic: str,
    f: DlqFilter,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Say | None = None,
    stats: ReadStats | None = None,
) -> Tally:
    out = Tally()
    for r in scan(
        bootstrap, [dlq_topic], period=f.period, timeout_s=timeout_s, progress=progress, stats=stats
    ):
        d = DeadLetter(r)
        if f.matches(d):
            out.add(d)
    return out


# --- replay ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayItem:
    letter: DeadLetter
    replays: int  # before this one
    refusal: str | None  # why it will not be sent; None: it will
    target: str | None
    headers: list[tuple[str, bytes]]

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    def describe(self) -> dict[str, Any]:
        d = self.letter
        return {
            "position": d.position,
            "tenant_id": d.tenant_id,
            "payment_id": d.payment_id,
            "reason": d.reason,
            "replays_before": self.replays,
            "send": self.allowed,
            "refusal": self.refusal,
            "target": self.target,
            "key": escape(d.record.key.decode("utf-8", "replace")) if d.record.key else None,
            "value_bytes": len(d.record.value or b""),
            "headers": [h for h, _ in self.headers],
        }


def plan_replay(
    inventory: Inventory, letters: list[DeadLetter], actor: str, max_replays: int
) -> list[ReplayItem]:
    """What a replay would send, record by record (nothing is sent here)."""
    items = []
    for d in letters:
        h = d.dlq
        n = inventory.replays(d)
        if h is None:
            items.append(
                ReplayItem(d, n, "no valid dlq.* headers: its original topic is unknown", None, [])
            )
            continue
        if n >= max_replays:
            items.append(
                ReplayItem(
                    d,
                    n,
                    f"already replayed {n} time(s), the limit is {max_replays} "
                    "(FLYT_DLQ_MAX_REPLAYS): it keeps failing, look at why before sending it again",
                    h.original_topic,
                    [],
                )
            )
            continue
        # Every other header stays byte for byte, in order; only the replay's own two are
        # replaced, at the end.
        headers = [(k, v) for k, v in d.record.headers if k not in wire.REPLAY_HEADERS]
        headers += [
            (wire.REPLAY_COUNT, str(n + 1).encode()),
            (wire.REPLAYED_BY, actor.encode()),
        ]
        items.append(ReplayItem(d, n, None, h.original_topic, headers))
    return items


def audit_items(items: list[ReplayItem], sent: dict[str, str]) -> list[audit.AuditItem]:
    out = []
    for item in items:
        d = item.letter
        where = sent.get(d.position)
        out.append(
            audit.AuditItem(
                source=f"{d.record.topic}/{d.position}",
                outcome="sent" if where else ("refused" if item.refusal else "not_sent"),
                target=item.target,
                tenant_id=d.tenant_id,
                payment_id=d.payment_id,
                fingerprint=d.fingerprint(),
                replay_count=item.replays,
                reason=item.refusal,
                sent_to=where,
            )
        )
    return out
