"""The stream engine: a small aiokafka engine of our own (replacing faust-streaming).

One piece per file:
- `records`      — what flows: input records, outputs, state changes;
- `engine`       — the consumer loop and the rebalance listener (the hand-over);
- `offsets`      — which input offsets of a partition are done (`Lane`);
- `commit`       — the commit point: when an offset may be committed; membership;
- `writer`       — outputs, then state, then done;
- `delivery`     — writing outputs until the broker holds them (size refusals dead-lettered);
- `state`, `restore` — per-partition stores on compacted changelogs, restored on assign;
- `backpressure` — pausing a partition with too many undone records;
- `assignment`   — co-partitioned, balanced assignment of partitions to workers;
- `backend`      — the two small interfaces the engine needs of a broker;
- `kafka`        — them on aiokafka (the only module that builds aiokafka clients);
- `memory`       — them in process, for fast tests beside the real-broker tests;
- `follower`     — following whole topics outside the group (the register cache);
- `topics`, `lag`, `broker_kind` — creating topics, the group's lag, which broker answers;
- `anchor`       — plain aiokafka consume → produce, the bench's yardstick.

`../shared/engine.md` states the guarantees; `commit.py` lists the commit point's steps.
"""
