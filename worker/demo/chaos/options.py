"""What a campaign is asked to do (`python -m worker chaos` options), and what it refuses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worker.devenv.sandbox import PROFILES


class ChaosUsageError(ValueError):
    """Options that cannot make a campaign; the message says why, in one line."""


class CampaignAborted(RuntimeError):
    """The campaign cannot go on (a worker refuses its settings); the message says why."""


@dataclass(frozen=True)
class ChaosOptions:
    events: int = 3000
    kills: int = 5
    workers: int = 2
    broker: str = "tansu"  # or "kafka"
    broker_kills: int = 0
    profile: str = "mixed"
    ledger_out: Path | None = None
    seed: int = 2026
    rate: float = 50.0  # events per second
    bad: int | None = None  # unreadable lines; default 1 per 100 events
    log_dir: Path | None = None  # kept; by default a temporary folder, kept on failure
    timeout_s: float = 1200.0

    def check(self) -> None:
        if self.broker not in ("tansu", "kafka"):
            raise ChaosUsageError(f"--broker must be tansu or kafka, not {self.broker!r}")
        if self.broker == "tansu" and self.broker_kills > 0:
            raise ChaosUsageError(
                "--broker-kills needs --broker kafka: the embedded Tansu broker keeps "
                "everything in memory, so a killed one restarts empty (no durability to test)"
            )
        if self.profile not in PROFILES:
            raise ChaosUsageError(
                f"unknown fault profile {self.profile!r}; valid: {', '.join(PROFILES)}"
            )
        if self.workers < 1:
            raise ChaosUsageError("--workers must be at least 1")
        if self.events < 1:
            raise ChaosUsageError("--events must be at least 1")

    @property
    def n_bad(self) -> int:
        return self.events // 100 if self.bad is None else self.bad
