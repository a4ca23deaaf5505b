"""A local stand-in for Xledger's GraphQL API, faithful to ../shared/xledger.md.

It serves `POST /graphql` with Xledger's auth header, burst/concurrency/credit limits and
error shapes, validates every request against `worker/xledger/schema.graphql` (the SDL
the client is written to) with graphql-core, keeps an in-memory GL ledger per entity,
and injects faults (5xx, dropped connections, slow answers, commit-then-fail, spurious
burst errors) so the client's retries and idempotency can be tested. Tokens live only in
memory, as dictionary keys: no message or log shows one.

A test double: production code never imports it (an import-linter contract).

- `entities`  — an Xledger entity per tenant, made from its register snapshot;
- `faults`    — fault profiles and the counters the sandbox keeps;
- `schema`    — the SDL with its Decimal and Date scalars;
- `resolvers` — the GL store and the query and mutation resolvers;
- `server`    — HTTP: auth, limits, error shapes, faults; `python -m worker sandbox`;
- `held`      — its ledger as the lines the ledger verdict judges.
"""

from worker.devenv.sandbox.entities import Entity, entity_from_snapshot
from worker.devenv.sandbox.faults import PROFILES, FaultProfile, SandboxStats
from worker.devenv.sandbox.held import held_lines, lines_by_payment
from worker.devenv.sandbox.server import StoredBatch, XledgerSandbox, serve

__all__ = [
    "PROFILES",
    "Entity",
    "FaultProfile",
    "SandboxStats",
    "StoredBatch",
    "XledgerSandbox",
    "entity_from_snapshot",
    "held_lines",
    "lines_by_payment",
    "serve",
]
