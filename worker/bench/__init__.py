"""`python -m worker bench`: the worker's figures side by side with the broker's own speed.

Not production code: it runs the demo data, the Xledger sandbox and brokers of its own
(`runner.py`); production modules never import it.

- `data`        — the bench's tenants (clones of the demo tenants, registers padded to a
                  municipality's size) and their events;
- `core`        — the pure core's cost per payment (no I/O);
- `worker_proc` — the worker as a child process (`python -m worker run`);
- `watch`       — reads a run's topics back: outcomes, latencies, output times;
- `world`       — what every plan stands on: broker, sandbox, registers, the anchor's runs;
- `worker_runs` — the enrich stage alone, and whole workers in one group, timed;
- `runner`      — the standard plan: its phases and summary (last line: one JSON object);
- `month_start` — `--month-start`: all-Betalt bursts as events and tenants grow;
- `scaling`     — `--scaling`: 1 → N workers in one group on Apache Kafka with 3 brokers;
- `report`      — `--report DIR`: the summary, its series and PNGs (matplotlib).

The anchor (plain aiokafka consume → json.loads → produce) is `anchor.py`, the one bench
module the import-linter contract lets speak aiokafka.
"""
