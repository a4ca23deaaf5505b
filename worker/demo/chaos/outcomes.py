"""Every outcome of a campaign read back from the topics: what the verdict needs per payment
(how many receipts, which rejection and DLQ reasons), the receipts' times (recovery), and
the dead letters of records that are no payment (the unreadable lines)."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

from worker.config import Settings
from worker.contracts import headers as h
from worker.demo.watcher import Key, OutcomeWatcher, payment_key
from worker.engine.records import Record


class CampaignWatcher(OutcomeWatcher):
    """OutcomeWatcher's reading, plus each payment's outcomes and each dead letter's origin."""

    def __init__(self, bootstrap: str, s: Settings) -> None:
        super().__init__(bootstrap, s)
        self.receipts: Counter[Key] = Counter()
        self.rejections: dict[Key, list[str]] = defaultdict(list)
        self.payment_dead_letters: dict[Key, list[str]] = defaultdict(list)
        # (original topic, partition, offset) → the payment the record names, if any
        self.dead_letter_origins: dict[tuple[str, str, str], Key | None] = {}
        self.dead_letter_records = 0
        self.receipt_times: list[tuple[float, str]] = []  # (broker time in s, tenant)
        self.last_outcome = time.monotonic()

    def note(self, topic: str, where: str, r: Record) -> None:
        if topic != self.s.topics.payments:
            self.last_outcome = time.monotonic()
        super().note(topic, where, r)

    def note_receipt(self, r: Record) -> None:
        super().note_receipt(r)
        key = payment_key(r.value)
        if key:
            self.receipts[key] += 1
            self.receipt_times.append((r.timestamp_ms / 1000, key[0]))

    def note_rejection(self, r: Record) -> None:
        super().note_rejection(r)
        key = payment_key(r.value)
        if key:
            self.rejections[key].append(str(json.loads(r.value or b"{}").get("reason")))

    def note_dead_letter(self, r: Record) -> None:
        super().note_dead_letter(r)
        headers = {k: v.decode("utf-8", "replace") for k, v in (r.headers or [])}
        reason = headers.get(h.DLQ_REASON, "?")
        payment = payment_key(r.value)
        if payment:
            self.payment_dead_letters[payment].append(reason)
        origin = (
            headers.get(h.DLQ_ORIGINAL_TOPIC, "?"),
            headers.get(h.DLQ_ORIGINAL_PARTITION, "?"),
            headers.get(h.DLQ_ORIGINAL_OFFSET, "?"),
        )
        self.dead_letter_origins[origin] = payment
        self.dead_letter_records += 1

    def unreadable_dead_lettered(self, betalt: set[Key]) -> int:
        """Dead-lettered input records that are no Betalt payment (the bad lines), each
        counted once however often it was dead-lettered (a kill may repeat one)."""
        return sum(1 for key in self.dead_letter_origins.values() if key not in betalt)
