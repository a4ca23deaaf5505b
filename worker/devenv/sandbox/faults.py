"""Fault profiles the sandbox injects, and the counters it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FaultProfile:
    """Probabilities (0..1) of each fault, drawn per request."""

    error_5xx: float = 0.0  # HTTP 502/503, plain text, nothing done
    drop: float = 0.0  # connection closed without an answer, nothing done
    slow: float = 0.0  # the correct answer, slow_seconds late
    slow_seconds: float = 1.0
    commit_then_fail: float = 0.0  # mutations: stored, then HTTP 500, a drop, or a hang+drop
    hang_seconds: float = 5.0
    burst_error: float = 0.0  # a spurious burst-limit error, nothing done
    # Not a probability: every mutation is stored this long after it arrives, whether or
    # not its client still waits (a server that goes on with a request its client gave up
    # on); the answer follows the store. 0: at once.
    store_after_s: float = 0.0
    # Not a probability: whether Xledger's import job removes the items it has made
    # journal entries of from glImportItems (nothing public says whether it does).
    clear_processed: bool = False


PROFILES: dict[str, FaultProfile] = {
    "none": FaultProfile(),
    "5xx": FaultProfile(error_5xx=0.2),
    "drop": FaultProfile(drop=0.2),
    "slow": FaultProfile(slow=0.5),
    "commit-then-fail": FaultProfile(commit_then_fail=0.2),
    "burst": FaultProfile(burst_error=0.2),
    "mixed": FaultProfile(error_5xx=0.10, commit_then_fail=0.05, burst_error=0.05),
    "staging-cleared": FaultProfile(clear_processed=True),
    # Past the worker's 15 s request deadline: only the settle time keeps it from posting
    # a payment a second time (R14, decided 12-06).
    "store-late": FaultProfile(store_after_s=16.0),
}


@dataclass
class SandboxStats:
    """Counters. Entities are keyed by name, never by token."""

    requests: int = 0  # every POST to /graphql
    queries: int = 0
    mutations: int = 0
    accepted_batches: int = 0
    accepted_lines: int = 0
    imported_lines: int = 0  # import items the import job made journal entries of
    rejected_validation: int = 0  # requests answered with GraphQL errors, nothing stored
    burst_errors_sent: int = 0  # the real sliding-window limit
    spurious_burst_errors_sent: int = 0
    concurrency_errors_sent: int = 0
    credit_errors_sent: int = 0
    auth_failures: int = 0
    # "5xx", "drop", "slow", "burst", "commit-then-fail:500|drop|hang"
    faults: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    request_times: dict[str, list[float]] = field(default_factory=dict)

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
