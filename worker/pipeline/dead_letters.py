"""The dead-letter policy, in one place: a DLQ record is the original key, value and headers
unchanged, plus the `dlq.*` headers of contracts.md, with a reason from `DlqReason`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker import logs, metrics
from worker.contracts import DlqHeaders, DlqReason
from worker.contracts.headers import DLQ_PREFIX, REPLAY_HEADERS
from worker.engine.records import Output, Record


def _headers_list(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def dlq_headers(
    original_headers: Any,
    *,
    reason: DlqReason,
    error_class: str,
    error_message: str,
    stage: str,
    topic: str,
    partition: int,
    offset: int,
    attempts: int = 1,
    first_failed_at: datetime | None = None,
) -> list[tuple[str, bytes]]:
    """The original headers (minus any earlier dlq.* ones) followed by this failure's."""
    now = datetime.now(UTC)
    header = DlqHeaders.model_validate(
        {
            "reason": reason,
            "error_class": error_class,
            # Bounded: a header is not a log file. Never a token: crash texts (str(exc))
            # are masked here, as every text that leaves the process is (R5).
            "error_message": logs.mask(error_message)[:2000],
            "stage": stage,
            "original_topic": topic,
            "original_partition": partition,
            "original_offset": offset,
            "attempts": attempts,
            "first_failed_at": (first_failed_at or now).isoformat(),
            "last_failed_at": now.isoformat(),
        }
    )
    # A replayed record that fails again keeps its replay count (the cap on replays).
    kept = [
        (k, v)
        for k, v in _headers_list(original_headers)
        if not k.startswith(DLQ_PREFIX) or k in REPLAY_HEADERS
    ]
    return kept + header.to_kafka()


def dead_letter(
    dlq_topic: str,
    record: Record,
    *,
    reason: DlqReason,
    error_class: str,
    error: str,
    stage: str,
    attempts: int = 1,
) -> Output:
    """The DLQ record for an input `record`, counted once here."""
    metrics.DEAD_LETTERS.labels(stage, reason).inc()
    headers = dlq_headers(
        record.headers,
        reason=reason,
        error_class=error_class,
        error_message=error,
        stage=stage,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        attempts=attempts,
    )
    return Output(dlq_topic, record.key, record.value, headers)


def invalid_submission(dlq_topic: str, record: Record, error: str) -> Output:
    """The DLQ record for a record on the submissions topic that is no submission of this
    worker's (what is wrong with it: `error`)."""
    return dead_letter(
        dlq_topic,
        record,
        reason=DlqReason.INVALID,
        error_class="ValidationError",
        error=error,
        stage="post",
    )
