"""The dead-letter record's headers (contracts.md). The key and value stay the original bytes."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from worker.contracts.types import Record, Timestamp

DLQ_HEADERS = (
    "dlq.reason",
    "dlq.error_class",
    "dlq.error_message",
    "dlq.stage",
    "dlq.original_topic",
    "dlq.original_partition",
    "dlq.original_offset",
    "dlq.attempts",
    "dlq.first_failed_at",
    "dlq.last_failed_at",
    "dlq.replay_count",
    "dlq.replayed_by",
)


class DlqHeaders(Record):
    """Why a record was dead-lettered. Never carries a token (R5)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    reason: str = Field(alias="dlq.reason")
    error_class: str = Field(alias="dlq.error_class")
    error_message: str = Field(alias="dlq.error_message")
    stage: str = Field(alias="dlq.stage", description="enrich | post | replay")
    original_topic: str = Field(alias="dlq.original_topic")
    original_partition: int = Field(alias="dlq.original_partition")
    original_offset: int = Field(alias="dlq.original_offset")
    attempts: int = Field(alias="dlq.attempts", ge=1)
    first_failed_at: Timestamp = Field(alias="dlq.first_failed_at")
    last_failed_at: Timestamp = Field(alias="dlq.last_failed_at")
    replay_count: int | None = Field(default=None, alias="dlq.replay_count")
    replayed_by: str | None = Field(default=None, alias="dlq.replayed_by")

    def to_kafka(self) -> list[tuple[str, bytes]]:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return [(name, str(value).encode()) for name, value in data.items()]

    @classmethod
    def from_kafka(cls, headers: list[tuple[str, bytes]]) -> DlqHeaders:
        data = {k: v.decode() for k, v in headers if k.startswith("dlq.")}
        return cls.model_validate(data)
