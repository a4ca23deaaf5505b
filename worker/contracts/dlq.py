"""The dead-letter record's headers (contracts.md). The key and value stay the original bytes."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from worker.contracts import headers as h
from worker.contracts.types import Record, Timestamp


class DlqReason(StrEnum):
    """Why a record is in the dead-letter queue: what cannot be read, and what retries
    could not post (R14). A refusal of content by Xledger is a rejection, not this."""

    INVALID = "invalid"  # the bytes are not a valid record of their topic
    NO_SNAPSHOT = "no_snapshot"  # older records only: the post stage now waits for one
    # R18: the snapshot in force changed URL, Motkonto or Bankkonti-pkey since the payment
    # was evaluated, and the submission does not carry its event to evaluate again.
    SNAPSHOT_CHANGED = "snapshot_changed"
    CRASH = "crash"  # the stage failed on the batch (a bug): see error_class
    UNWRITABLE = "unwritable"  # its output is larger than the broker takes
    REFUSED = "refused"  # older records only: a refusal is now a rejection alone (R14)
    # Xledger failures that retries could not cure (worker/xledger/errors.py):
    TRANSIENT = "transient"  # nothing reached Xledger
    UNKNOWN_OUTCOME = "unknown_outcome"  # sent, no trustworthy answer
    AUTH = "auth"  # the tenant's token was refused
    RATE_LIMITED = "rate_limited"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    XLEDGER_ERROR = "xledger_error"  # any other Xledger failure

    @classmethod
    def for_xledger(cls, code: str) -> DlqReason:
        """The reason for an Xledger error code (worker.xledger.errors `code`)."""
        if code.startswith("BAD_REQUEST.") and code.endswith("LIMIT_REACHED"):
            return cls.RATE_LIMITED
        known = {
            "transient": cls.TRANSIENT,
            "unknown_outcome": cls.UNKNOWN_OUTCOME,
            "auth": cls.AUTH,
            "refused": cls.REFUSED,
            "INSUFFICIENT_CREDITS": cls.INSUFFICIENT_CREDITS,
        }
        return known.get(code, cls.XLEDGER_ERROR)


class DlqHeaders(Record):
    """Why a record was dead-lettered. Never carries a token (R5)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    reason: DlqReason = Field(alias=h.DLQ_REASON)
    error_class: str = Field(alias=h.DLQ_ERROR_CLASS)
    error_message: str = Field(alias=h.DLQ_ERROR_MESSAGE)
    stage: str = Field(alias=h.DLQ_STAGE, description="enrich | post | replay")
    original_topic: str = Field(alias=h.DLQ_ORIGINAL_TOPIC)
    original_partition: int = Field(alias=h.DLQ_ORIGINAL_PARTITION)
    original_offset: int = Field(alias=h.DLQ_ORIGINAL_OFFSET)
    attempts: int = Field(alias=h.DLQ_ATTEMPTS, ge=1)
    first_failed_at: Timestamp = Field(alias=h.DLQ_FIRST_FAILED_AT)
    last_failed_at: Timestamp = Field(alias=h.DLQ_LAST_FAILED_AT)
    replay_count: int | None = Field(default=None, alias=h.REPLAY_COUNT)
    replayed_by: str | None = Field(default=None, alias=h.REPLAYED_BY)

    def to_kafka(self) -> list[tuple[str, bytes]]:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return [(name, str(value).encode()) for name, value in data.items()]

    @classmethod
    def from_kafka(cls, headers: list[tuple[str, bytes]]) -> DlqHeaders:
        data = {k: v.decode() for k, v in headers if k.startswith(h.DLQ_PREFIX)}
        return cls.model_validate(data)
