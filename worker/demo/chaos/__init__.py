"""`python -m worker chaos`: the reliability campaign (issue 10, R14).

A broker, the Xledger sandbox with a fault profile, and W worker processes deployed as an
operator deploys them (`python -m worker run --bootstrap …`, tokens from files in
`XLEDGER_TOKEN_DIR`, settings from `FLYT_*` variables). Demo events, with unreadable lines
among them, flow at a steady pace while workers are SIGKILLed and restarted (some right
after Xledger stored a batch and before the worker heard of it: between a post and its
commit) and, on a three-broker Apache Kafka cluster, a broker is killed and restarted.
Once the flow is quiet, the ledger is read back from the sandbox itself and judged by the
one ledger verdict (`worker/core/ledger_verdict.py`): R14 (one outcome per Betalt
payment) and R18 (two balanced lines, external identifiers unique).

- `options`    — what a campaign is asked to do, and what it refuses;
- `transcript` — the progress lines, kept beside the workers' logs;
- `workers`    — the worker processes: started, killed, restarted as a supervisor would;
- `flow`       — the feed, and the kills, the supervisor and the samples beside it;
- `faults`     — the kills: workers (at random, or right after Xledger stored a batch),
                 and brokers;
- `outcomes`   — reading every outcome back from the topics;
- `verdict`    — the campaign's verdict, from the ledger verdict and the core's own
                 expectations; recovery times;
- `campaign`   — the steps, in order, and the JSON summary.

A test harness, not production code (production never imports `worker.demo`).
"""

from worker.demo.chaos.campaign import run, run_campaign
from worker.demo.chaos.faults import Kill
from worker.demo.chaos.options import CampaignAborted, ChaosOptions, ChaosUsageError
from worker.demo.chaos.outcomes import CampaignWatcher
from worker.demo.chaos.verdict import Verdict, check_r14, expected_outcomes, recovery

__all__ = [
    "CampaignAborted",
    "CampaignWatcher",
    "ChaosOptions",
    "ChaosUsageError",
    "Kill",
    "Verdict",
    "check_r14",
    "expected_outcomes",
    "recovery",
    "run",
    "run_campaign",
]
