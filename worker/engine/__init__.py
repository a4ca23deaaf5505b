"""The stream engine: a small aiokafka engine of our own (replacing faust-streaming).

One piece per file:
- `records`      — what flows: input records, outputs, state changes;
- `engine`       — the consumer loop and the rebalance listener (the hand-over), and
                   `StageContext`: what a stage may use of the engine, given when it is built;
- `key_loop`     — a loop per key within a lane: one key's items in order, the steps a stop
                   must not cut, and a failed body stopping the worker;
- `offsets`      — which input offsets of a partition are done (`Lane`);
- `commit`       — the commit point: when an offset may be committed; membership;
- `writer`       — outputs, then state, then done;
- `delivery`     — writing outputs until the broker holds them (size refusals dead-lettered);
- `state`, `restore` — per-partition stores on compacted changelogs, restored on assign;
- `backpressure` — pausing a partition with too many undone records;
- `assignment`   — co-partitioned, balanced assignment of partitions to workers;
- `backend`      — the small interfaces the engine needs of a broker;
- `kafka`, `producer` — them on aiokafka: the group consumer, the reader, the producer;
- `memory`       — them in process, for fast tests beside the real-broker tests;
- `follower`     — following whole topics outside the group, and every worker's copy of one
                   (`FollowedTopic`: the register cache, the tenant control);
- `topics`, `lag` — creating topics, the group's lag;
- `broker_kind`  — which broker answers (Apache Kafka or Tansu), asked through
                   `worker.kafka_clients.probe` as the connection is checked.

Only this package builds the stream's Kafka clients (aiokafka), each with the connection
arguments of `worker.kafka_clients` (TLS, SASL); the bench's plain-aiokafka yardstick is
`worker/bench/anchor.py`. `../shared/engine.md` states the guarantees; `commit.py` lists
the commit point's steps.
"""
