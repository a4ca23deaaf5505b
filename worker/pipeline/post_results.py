"""A post's results on the broker: for each payment of a `PostResult` that has its outcome,
the record of it (a receipt; a rejection `XLEDGER_REFUSED` and the payment sent back to the
holder of its state, R14/R16; a dead letter) and its outcome state (`post_outcomes.py`),
in one write; their submission records are then done. Held and abandoned payments get
nothing here."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime

from worker import logs, metrics
from worker.contracts import DlqReason
from worker.contracts.headers import SOURCE
from worker.core.messages import xledger_refused
from worker.core.outcome import Rejected
from worker.engine.offsets import Lane
from worker.engine.records import Output, Record, StateChange
from worker.pipeline.dead_letters import dead_letter, invalid_submission
from worker.pipeline.decision import decided
from worker.pipeline.post_outcomes import DEAD_LETTERED, POSTED, REJECTED, Outcome, PostOutcomes
from worker.pipeline.poster_tools import Item, PosterTools
from worker.pipeline.topics import OUTCOMES
from worker.xledger.client import PostResult

log = logs.get("worker.pipeline")

PRUNE_EVERY_S = 3600.0  # outcomes whose submissions are gone leave at most this often


def outcome_of(kind: str, records: list[Record]) -> Outcome:
    """The outcome `kind`, answering the newest of these records."""
    return Outcome(kind, max(r.offset for r in records), time.time())


class ResultWriter:
    """Writes the results of one tenant's posts within one holding of a partition."""

    def __init__(self, tools: PosterTools, lane: Lane, tenant: str) -> None:
        self.t = tools
        self.lane = lane
        self.tenant = tenant

    def outcomes(self) -> PostOutcomes:
        return PostOutcomes(self.t.ctx.store(OUTCOMES, self.lane.tp.partition))

    async def write(self, items: list[Item], result: PostResult) -> set[str]:
        """Put the outcomes of one post on the broker; returns the payments answered."""
        t = self.t
        topics = t.s.topics
        by_payment: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            by_payment[item.sub.payment_id].append(item)
        outcomes = self.outcomes()
        outputs: list[Output] = []
        changes: list[StateChange] = []
        finished: list[Record] = []
        answered: set[str] = set()
        now = datetime.now(UTC)

        def answer(payment: str, kind: str) -> list[Record]:
            answered.add(payment)
            records = [item.record for item in by_payment[payment]]
            finished.extend(records)
            changes.append(outcomes.change(self.tenant, payment, outcome_of(kind, records)))
            return records

        for receipt in dict((r.payment_id, r) for r in result.receipts).values():
            source = answer(receipt.payment_id, POSTED)[0]
            value = receipt.model_dump_json().encode()
            outputs.append(Output(topics.receipts, self.tenant.encode(), value, source=source))
        for sub, message in dict((s.payment_id, (s, m)) for s, m in result.refused).values():
            item = by_payment[sub.payment_id][0]
            event = item.event()
            if isinstance(event, str):  # not posted, and cannot be evaluated again: by hand
                record = answer(sub.payment_id, DEAD_LETTERED)[0]
                why = f"refused by Xledger ({message}); its Betalt event cannot be read: {event}"
                outputs.append(invalid_submission(topics.dlq, record, why))
                continue
            answer(sub.payment_id, REJECTED)
            refused = Rejected(sub.snapshot_version, (xledger_refused(message),))
            outputs += decided(
                t.s,
                refused,
                event,
                event.model_dump_json().encode(),
                item.record,
                now,
                states=None,
                home=(item.record.header(SOURCE) or b"").decode() or None,
            ).outputs
        failed = dict((s.payment_id, (s, c, m)) for s, c, m in result.failed)
        for sub, code, message in failed.values():
            record = answer(sub.payment_id, DEAD_LETTERED)[0]
            outputs.append(
                dead_letter(
                    topics.dlq,
                    record,
                    reason=DlqReason.for_xledger(code),
                    error_class=f"Xledger {code}",
                    error=message,
                    stage="post",
                    attempts=t.client.s.max_attempts,
                )
            )
        changes += self._expired(outcomes)
        await t.ctx.write(outputs, changes, [(self.lane, r) for r in finished])
        acked = datetime.now(UTC)
        for receipt in result.receipts:
            # From the enrich stage reading the Betalt event to the receipt on the broker.
            created = by_payment[receipt.payment_id][0].sub.created_at
            metrics.BETALT_TO_RECEIPT_SECONDS.observe((acked - created).total_seconds())
        log.info(
            "batch_posted",
            tenant_id=self.tenant,
            payments=len(items),
            receipts=len(result.receipts),
            refused=len(result.refused),
            failed=len(result.failed),
            held=len(result.held),
            abandoned=len(result.abandoned),
            requests=result.requests,
        )
        return answered

    def _expired(self, outcomes: PostOutcomes) -> list[StateChange]:
        """Outcomes whose submissions the broker no longer has: at most once an hour."""
        now = time.monotonic()
        p = outcomes.partition
        if now - self.t.pruned.get(p, 0.0) < PRUNE_EVERY_S:
            return []
        self.t.pruned[p] = now
        return outcomes.expired(time.time(), self.t.s.retention_days * 86_400)
