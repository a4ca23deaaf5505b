"""`python -m worker bench`: the worker's figures side by side with the broker's own speed.

Not production code: it runs the demo data, the Xledger sandbox and brokers of its own
(`runner.py`); production modules never import it.

- `data`        — the bench's tenants (clones of the demo tenants, registers padded to a
                  municipality's size) and their events;
- `core`        — the pure core's cost per payment (no I/O);
- `worker_proc` — the worker as a child process (`python -m worker run`);
- `watch`       — reads a run's topics back: outcomes, latencies, output times;
- `runner`      — the phases, the broker, the summary (last line: one JSON object).

The anchor (plain aiokafka consume → json.loads → produce) is `worker/engine/anchor.py`:
the engine is the one package that speaks aiokafka.
"""
