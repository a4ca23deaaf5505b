"""What the Xledger client's callers name: where a tenant posts (`Target`), what a call
ends in (`PostResult`, `HoldReason`), the client's settings, and the caller's fence."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from worker.contracts import Receipt, SubmissionFields

# The caller's answer to "do you still own these payments?", sync or async. Asked just
# before each mutation is sent.
Fence = Callable[[], Awaitable[bool]] | Callable[[], bool]


@dataclass(frozen=True, slots=True)
class Target:
    """Where and as whom a tenant's payments are posted (from its register snapshot)."""

    tenant_id: str
    url: str
    token_ref: str
    test_tenant: bool = False


class HoldReason(StrEnum):
    """Why payments are held: no outcome yet, and the caller must post them again later."""

    TOKEN = "token"  # the tenant's token is missing or refused: a fault of the tenant
    # Sent with an unknown outcome, or never found absent by a lookup (Xledger not
    # answering): they may be in Xledger. Posted again not before `retry_at`, lookup first.
    UNRESOLVED = "unresolved"


@dataclass
class PostResult:
    receipts: list[Receipt] = field(default_factory=list)
    refused: list[tuple[SubmissionFields, str]] = field(default_factory=list)  # Xledger's message
    # Not posted after the retries, and known not to be in Xledger: (code, message).
    failed: list[tuple[SubmissionFields, str, str]] = field(default_factory=list)
    # No outcome yet: the caller holds them and posts them again later (`held_reason`).
    held: list[SubmissionFields] = field(default_factory=list)
    held_why: str = ""
    held_reason: HoldReason | None = None
    # UNRESOLVED: not to be looked up before this (the client's clock): the settle time
    # after an unknown outcome, or a backoff when Xledger could not be asked.
    retry_at: float | None = None
    # Of the held: sent in a mutation whose outcome is unknown (the settle time runs).
    unknown: set[str] = field(default_factory=set)
    # Not posted because the caller no longer owns them (its `fence` said so): another
    # worker posts them now. No outcome here, on purpose.
    abandoned: list[SubmissionFields] = field(default_factory=list)
    requests: int = 0
    # External identifiers Xledger holds more than once (R18: reported, never hidden).
    duplicates: list[str] = field(default_factory=list)
    # `find()` only: the payments Xledger lacks.
    absent: list[SubmissionFields] = field(default_factory=list)


@dataclass
class ClientSettings:
    """The client's knobs; the burst, concurrency and credits ones are read by pacing."""

    timeout_s: float = 10.0  # httpx's, per phase (connect, write, pool); reads: the deadline
    # The whole request, hard: "in flight" ends here, so a hand-over can wait for it.
    request_deadline_s: float = 15.0
    # A lookup after which the call has waited longer than this (Xledger's limits, backoff,
    # the budget) when its mutation is about to leave is asked again.
    relookup_after_s: float = 1.0
    # After an unknown outcome, the lookup that decides a resend waits this long: Xledger
    # may still be storing the first request (R14, decided 12-06). It has no idempotency
    # key: a request stored later than this is the one residual risk (`reconcile`).
    settle_s: float = 60.0
    # Held because Xledger could not be asked (a lookup failed): asked again after this.
    unresolved_retry_s: float = 10.0
    max_attempts: int = 8  # per batch, for retryable failures ...
    # ... and never before Xledger has been failing this long: an outage of minutes is
    # waited out (every tenant holds its payments), not turned into dead letters.
    outage_patience_s: float = 30 * 60.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    burst_limit: int = 20  # Xledger: 20 requests per 5 s per token
    burst_window_s: float = 5.0
    burst_headroom: int = 2  # stay below the limit so steady state never meets it
    concurrency: int = 2  # requests in flight per token
    credits_pause_s: float = 20 * 60.0  # Xledger's own sample waits 20 min
    # A code Xledger refused is refused without asking for a payment's first submission
    # for this long (`refusal_memory.py`); 0 asks every time.
    refusal_memory_s: float = 300.0
    transaction_source: str = "GL"

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s < self.request_deadline_s:
            raise ValueError(
                f"the per-phase timeout ({self.timeout_s} s) must be below the request "
                f"deadline ({self.request_deadline_s} s)"
            )
        if self.settle_s < self.request_deadline_s:
            raise ValueError(
                f"the settle time ({self.settle_s:g} s) must be at least the request deadline "
                f"({self.request_deadline_s:g} s): Xledger may still be storing a request "
                "its client stopped waiting for"
            )
