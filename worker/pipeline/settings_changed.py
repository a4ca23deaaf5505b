"""R18 before posting: a submission decided under another Xledger URL, Motkonto or
Bankkonti-pkey than the snapshot in force is evaluated again against it before it is
posted, but only once a lookup where it was decided for (its URL and token reference)
says Xledger lacks it: a payment posted just before a crash is in Xledger there, and gets
its receipt, not a second voucher elsewhere or a rejection (R14, decided 12-06)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from worker import logs
from worker.contracts.headers import SOURCE
from worker.core import evaluate
from worker.core.outcome import Rejected
from worker.core.posting import settings_changed
from worker.core.register_index import RegisterIndex
from worker.engine.records import Output, StateChange
from worker.pipeline.dead_letters import invalid_submission
from worker.pipeline.decision import decided
from worker.pipeline.held_payments import HeldPayments
from worker.pipeline.post_outcomes import DEAD_LETTERED, REJECTED
from worker.pipeline.post_results import ResultWriter, outcome_of
from worker.pipeline.poster_tools import Item
from worker.xledger.client import Target
from worker.xledger.errors import LookupFailed

log = logs.get("worker.pipeline")


async def unless_settings_changed(
    items: list[Item], index: RegisterIndex, writer: ResultWriter, held: HeldPayments
) -> list[Item]:
    """The items to post now: those decided under the settings in force. The others are
    looked up where they were decided for: found, a receipt; absent, evaluated again (a
    new submission, or a rejection); Xledger not answering, held a while."""
    changed = [i for i in items if settings_changed(i.sub.lines, i.sub.xledger_url, index.settings)]
    if not changed:
        return items
    t, tenant = writer.t, writer.tenant
    by_target: dict[Target, list[Item]] = defaultdict(list)
    for item in changed:
        ref = item.sub.token_ref or index.settings.token_ref
        url = item.sub.xledger_url or index.settings.url
        by_target[Target(tenant, url, ref, index.test_tenant)].append(item)
    for target, group in by_target.items():
        try:
            found = await t.client.find(target, [item.sub for item in group])
        except LookupFailed as exc:
            log.warning("r18_lookup_failed", tenant_id=tenant, error=str(exc))
            held.hold(group, held.clock() + t.client.s.unresolved_retry_s, unknown=False)
            continue
        held.answered(await writer.write(group, found))
        absent = {id(sub) for sub in found.absent}
        await _evaluate_again(writer, index, [i for i in group if id(i.sub) in absent])
    return [i for i in items if i not in changed]


async def _evaluate_again(writer: ResultWriter, index: RegisterIndex, items: list[Item]) -> None:
    """Each item evaluated against the snapshot in force: a new submission (which the loop
    posts when it comes round), or a rejection (this record's outcome); its record done."""
    if not items:
        return
    t, tenant = writer.t, writer.tenant
    outputs: list[Output] = []
    changes: list[StateChange] = []
    outcomes = writer.outcomes()
    now = datetime.now(UTC)
    for item in items:
        sub, record = item.sub, item.record
        log.info(
            "submission_evaluated_again",
            tenant_id=tenant,
            payment_id=sub.payment_id,
            evaluated_with=sub.snapshot_version,
            in_force=index.version,
            why="the snapshot in force has another Xledger URL, Motkonto or Bankkonti-pkey, "
            "and Xledger lacks the payment where it was evaluated for",
        )
        event = item.event()
        if isinstance(event, str):  # not in Xledger, and cannot be evaluated again: by hand
            why = f"to be evaluated again (R18), but its Betalt event cannot be read: {event}"
            outputs.append(invalid_submission(t.s.topics.dlq, record, why))
            dead = outcome_of(DEAD_LETTERED, [record])
            changes.append(outcomes.change(tenant, sub.payment_id, dead))
            continue
        result = evaluate(event, index)
        written = decided(
            t.s,
            result,
            event,
            event.model_dump_json().encode(),
            record,
            now,
            states=None,
            home=(record.header(SOURCE) or b"").decode() or None,
        )
        outputs += written.outputs
        if isinstance(result, Rejected):  # a new submission gets its own outcome
            changes.append(outcomes.change(tenant, sub.payment_id, outcome_of(REJECTED, [record])))
    await t.ctx.write(outputs, changes, [(writer.lane, item.record) for item in items])
