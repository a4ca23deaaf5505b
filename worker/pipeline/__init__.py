"""The worker's pipeline on the engine: the two stages, R16, payment state, outputs and the
dead-letter policy, wired together (`wiring.py`).

- `wiring`         — the register cache, the engine and the stages; timings; start order;
- `enrich_stage`   — payment-status → submissions, rejections, dead letters (R17, R6–R15);
- `reevaluation`   — R16: waiting rejections evaluated again on a newer snapshot;
- `post_stage`     — submissions → Xledger; the hand-over of a partition's posting;
- `tenant_poster`  — one tenant's posting loop: gather, post, record outcomes (R18);
- `read_budget`    — how many submissions all posting loops hold read at once;
- `payment_state`  — `handled` and `pending`, per partition;
- `register_cache` — every snapshot, in every worker;
- `outputs`, `dead_letters` — the records the stages write;
- `topics`         — the topics and state stores, with their configs;
- `observer`       — /ready and the state gauges.
"""
