"""Demo registers and a generator of realistic payment-status events."""

from worker.demo.events import generate_events
from worker.demo.snapshots import demo_snapshots

__all__ = ["demo_snapshots", "generate_events"]
