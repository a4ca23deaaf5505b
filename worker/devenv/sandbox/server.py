"""The sandbox over HTTP: Xledger's auth header, limits, error shapes and faults; and the
entry point that serves the snapshots its caller hands it (`python -m worker sandbox`: the
demo's). One request's path (auth, burst and concurrency limits, the fault profile,
GraphQL, commit-then-fail) reads top to bottom in one handler, with the hooks the tests
and the chaos campaign use beside it (`on_stored`, `double_voucher`, …)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web
from graphql import (
    DocumentNode,
    GraphQLError,
    OperationType,
    execute_sync,
    get_operation_ast,
    parse,
    validate,
)

from worker.contracts.register_snapshot import RegisterSnapshot
from worker.devenv.sandbox.entities import Entity, entity_from_snapshot
from worker.devenv.sandbox.faults import PROFILES, FaultProfile, SandboxStats
from worker.devenv.sandbox.resolvers import Context, Ledger, executable_schema, flatten

CREDITS_RESET_S = 20 * 60  # Xledger's own sample waits 20 min on INSUFFICIENT_CREDITS
BAD_TOKEN_FORMAT = 'Bad format for API Token. Expected header: "Authorization: token <your-token>"'
_TOKEN_HEADER = re.compile(r"token +(\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class StoredBatch:
    """What `XledgerSandbox.on_stored` is told: a batch is stored, its answer not yet sent."""

    tenant: str  # the entity's name
    batch: int
    lines: int
    peer_port: int | None  # the client's port on its side of the connection


@dataclass
class _Tenant:
    entity: Entity
    window: deque[float] = field(default_factory=deque)  # monotonic times of admitted requests
    in_flight: int = 0


def _iso_in(seconds: float) -> str:
    when = datetime.now(UTC) + timedelta(seconds=max(seconds, 0.0))
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _coded(message: str, code: str, extensions: dict[str, Any] | None = None) -> web.Response:
    """Xledger's error shape: HTTP 200, top-level `code` on the error object."""
    error: dict[str, Any] = {"message": message, "code": code}
    if extensions:
        error["extensions"] = extensions
    return web.json_response({"errors": [error], "data": None})


def _bad_request(message: str, status: int = 400) -> web.Response:
    return web.json_response({"errors": [{"message": message}]}, status=status)


@lru_cache(maxsize=64)
def _checked(query: str) -> tuple[DocumentNode, tuple[GraphQLError, ...]]:
    """A query's document and its validation errors against our schema, once per query
    text: a client sends the same few documents with other variables, and a GraphQL
    server keeps what it parsed and validated of them (parsing and validating each
    request again was a fifth of the bench's sandbox CPU at the month start). A query that
    does not parse raises GraphQLError (and is not kept)."""
    document = parse(query)
    return document, tuple(validate(executable_schema(), document))


def _formatted(error: GraphQLError) -> dict[str, Any]:
    out = dict(error.formatted)
    code = (error.extensions or {}).get("code")
    if code:
        out["code"] = code
    return out


def _is_mutation(body: bytes) -> bool:
    try:
        query = json.loads(body).get("query")
    except (ValueError, AttributeError):
        return False
    return isinstance(query, str) and query.lstrip().startswith("mutation")


def _drop(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        transport.close()
    # Never reaches the client: aiohttp finds the connection closed and writes nothing.
    return web.Response(status=500)


class XledgerSandbox:
    """Xledger's GraphQL API on a local port, with limits and injectable faults."""

    def __init__(
        self,
        *,
        faults: FaultProfile = PROFILES["none"],
        burst_limit: int = 20,
        burst_window_s: float = 5.0,
        concurrency_limit: int = 4,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        import_delay_s: float | None = 1.0,
        credits_reset_s: float = CREDITS_RESET_S,
    ) -> None:
        """`import_delay_s`: Xledger's import job takes an import item this long after it
        was stored (checked at each request, on `clock`); None: only `run_import_job`."""
        self.faults = faults
        self.burst_limit = burst_limit
        self.burst_window_s = burst_window_s
        self.concurrency_limit = concurrency_limit
        self.stats = SandboxStats()
        self.url: str | None = None
        self._rng = random.Random(seed)
        self._clock = clock  # the burst window's clock: tests pass a fake one
        self._tenants: dict[str, _Tenant] = {}  # token → tenant; the only place a token lives
        self._ledger = Ledger(self.stats, clock)
        self._runner: web.AppRunner | None = None
        self.import_delay_s = import_delay_s
        self.credits_reset_s = credits_reset_s  # the resetAt an INSUFFICIENT_CREDITS names
        # Called the moment a batch is stored, before its answer leaves (the answer may
        # then fail: commit-then-fail). The chaos campaign kills the sender here.
        self.on_stored: Callable[[StoredBatch], None] | None = None
        self._late: set[asyncio.Task[tuple[web.Response, bool]]] = set()  # stores to come

    def add_entity(self, token: str, entity: Entity) -> None:
        if not token or any(c.isspace() for c in token):
            raise ValueError("a token must be non-empty and without whitespace")
        if token in self._tenants:
            raise ValueError(f"that token is already in use (entity {entity.name!r})")
        self._tenants[token] = _Tenant(entity)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/graphql", self._handle)
        app.router.add_route("POST", "/sandbox/vouchers/{action}", self._vouchers)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # No access log: nothing about a request is written anywhere. A short shutdown
        # timeout so a hanging commit-then-fail answer does not hold up stop().
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0][1]
        self.url = f"http://{host}:{bound}/graphql"
        return self.url

    async def stop(self) -> None:
        for late in list(self._late):  # a store still to come never comes
            late.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.url = None

    def entities(self) -> list[Entity]:
        """The entities served (a test may change what they know, or their credits)."""
        return [tenant.entity for tenant in self._tenants.values()]

    def ledger(self) -> list[dict[str, Any]]:
        """Every accepted GL line, in order of acceptance, flattened to codes."""
        return [flatten(line) for line in self._ledger.lines]

    def dump_ledger(self, path: str | os.PathLike[str]) -> int:
        lines = self.ledger()
        with open(path, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        return len(lines)

    def load_ledger(self, path: str | os.PathLike[str]) -> int:
        """Serve again the lines a ledger dump holds (`dump_ledger`, `demo --ledger-out`),
        dbIds kept; their entities must have been added. Returns the number of lines."""
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(text) for text in fh if text.strip()]
        names = {t.entity.name for t in self._tenants.values()}
        unknown = sorted({str(row.get("tenant")) for row in rows} - names)
        if unknown:
            raise ValueError(f"the ledger names entities the sandbox lacks: {', '.join(unknown)}")
        return self._ledger.load(rows)

    def ledger_size(self) -> int:
        """Lines stored, doubles included."""
        return len(self._ledger.lines)

    def run_import_job(self) -> int:
        """Xledger's import job now, for every item stored so far: they become journal
        entries (and leave staging under a profile with `clear_processed`)."""
        return self._ledger.run_import_job(clear_staging=self.faults.clear_processed)

    def double_voucher(self, tenant: str, ext_ids: Collection[str]) -> list[dict[str, Any]]:
        """Store these lines of `tenant`'s entity once more, as a client posting them a
        second time would; returns the new lines (as `ledger()` shows them)."""
        return [flatten(line) for line in self._ledger.again(tenant, set(ext_ids))]

    def delete_voucher(self, tenant: str, ext_ids: Collection[str]) -> int:
        """Remove every line of these external identifiers of `tenant`'s entity, from
        staging and the journal; returns how many went."""
        return self._ledger.delete(tenant, set(ext_ids))

    # -- request handling ---------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        return _bad_request(f"Not found: {request.path}. Use POST /graphql.", status=404)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _bad_request("Use POST with a JSON body {query, variables}.")
        self.stats.requests += 1
        body = await request.read()
        faults = self.faults
        roll = self._rng.random()
        if roll < faults.error_5xx:
            self.stats.fault("5xx")
            status = self._rng.choice((502, 503))
            reason = "Bad Gateway" if status == 502 else "Service Unavailable"
            return web.Response(status=status, text=f"{status} {reason}")
        if roll < faults.error_5xx + faults.drop:
            self.stats.fault("drop")
            return _drop(request)
        if roll < faults.error_5xx + faults.drop + faults.burst_error:
            self.stats.fault("burst")
            self.stats.spurious_burst_errors_sent += 1
            return self._burst_error(self.burst_window_s)

        tenant = self._authenticate(request)
        if isinstance(tenant, web.Response):
            return tenant
        if self.import_delay_s is not None:  # the import job, as time has passed
            self._ledger.run_import_job(
                delay_s=self.import_delay_s, clear_staging=faults.clear_processed
            )
        name = tenant.entity.name
        now = self._clock()
        self.stats.request_times.setdefault(name, []).append(now)

        # Sliding window: only admitted requests count, so a refused one does not extend it.
        window = tenant.window
        while window and window[0] <= now - self.burst_window_s:
            window.popleft()
        if len(window) >= self.burst_limit:
            self.stats.burst_errors_sent += 1
            return self._burst_error(window[0] + self.burst_window_s - now)
        window.append(now)

        if tenant.in_flight >= self.concurrency_limit:
            self.stats.concurrency_errors_sent += 1
            return _coded("Too many concurrent requests", "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED")
        tenant.in_flight += 1
        self.stats.max_in_flight[name] = max(
            self.stats.max_in_flight.get(name, 0), tenant.in_flight
        )
        try:
            entity = tenant.entity
            if entity.credits is not None:
                if entity.credits <= 0:
                    self.stats.credit_errors_sent += 1
                    return _coded(
                        "Insufficient credits",
                        "BAD_REQUEST.INSUFFICIENT_CREDITS",
                        {"resetAt": _iso_in(self.credits_reset_s)},
                    )
                entity.credits -= 1
            if self._rng.random() < faults.slow:
                self.stats.fault("slow")
                await asyncio.sleep(faults.slow_seconds)
            if faults.store_after_s > 0 and _is_mutation(body):
                # Its own task: stored even when the client stops waiting (and aiohttp
                # cancels this handler).
                late = asyncio.get_running_loop().create_task(
                    self._store_late(entity, body, request)
                )
                self._late.add(late)
                late.add_done_callback(self._late.discard)
                response, committed = await asyncio.shield(late)
            else:
                response, committed = self._execute(entity, body, request)
        finally:
            tenant.in_flight -= 1

        # The batch is stored; only the answer fails (the unknown outcome a client must handle).
        if committed and self._rng.random() < faults.commit_then_fail:
            kind = self._rng.choice(("500", "drop", "hang"))
            self.stats.fault(f"commit-then-fail:{kind}")
            if kind == "500":
                return web.Response(status=500, text="500 Internal Server Error")
            if kind == "hang":
                await asyncio.sleep(faults.hang_seconds)
            return _drop(request)
        return response

    async def _store_late(
        self, entity: Entity, body: bytes, request: web.Request
    ) -> tuple[web.Response, bool]:
        self.stats.fault("store-late")
        await asyncio.sleep(self.faults.store_after_s)
        return self._execute(entity, body, request)

    def _execute(
        self, entity: Entity, body: bytes, request: web.Request
    ) -> tuple[web.Response, bool]:
        response, committed = self._graphql(entity, body)
        if committed and self.on_stored is not None:
            self.on_stored(self._last_batch(request))
        return response, committed

    def _last_batch(self, request: web.Request) -> StoredBatch:
        # The request's batch is the ledger's last: execute_sync stored it with no await
        # since, so no other request can have stored one after it.
        lines = self._ledger.lines
        batch = lines[-1].batch
        count = sum(1 for _ in itertools.takewhile(lambda x: x.batch == batch, reversed(lines)))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = peer[1] if isinstance(peer, tuple) and len(peer) >= 2 else None
        return StoredBatch(lines[-1].tenant, batch, count, port)

    async def _vouchers(self, request: web.Request) -> web.Response:
        """`POST /sandbox/vouchers/double|delete` with `{"extIdentifiers": [...]}` and the
        entity's token: a voucher posted a second time, or gone, for tests and for
        `worker reconcile`'s acceptance against a sandbox in another process. Not part of
        Xledger's API."""
        tenant = self._authenticate(request)
        if isinstance(tenant, web.Response):
            return tenant
        try:
            ext_ids = (await request.json()).get("extIdentifiers")
        except (ValueError, AttributeError):
            ext_ids = None
        if not isinstance(ext_ids, list) or not all(isinstance(x, str) for x in ext_ids):
            return _bad_request('The body must be {"extIdentifiers": ["...", ...]}.')
        name = tenant.entity.name
        action = request.match_info["action"]
        if action == "double":
            return web.json_response({"lines": self.double_voucher(name, ext_ids)})
        if action == "delete":
            return web.json_response({"deleted": self.delete_voucher(name, ext_ids)})
        return _bad_request(f"Unknown action {action!r}: double or delete.", status=404)

    def _authenticate(self, request: web.Request) -> _Tenant | web.Response:
        match = _TOKEN_HEADER.fullmatch(request.headers.get("Authorization", "").strip())
        if match is None:
            self.stats.auth_failures += 1
            return _coded(BAD_TOKEN_FORMAT, "BAD_REQUEST.BAD_TOKEN_FORMAT")
        tenant = self._tenants.get(match.group(1))
        if tenant is None:
            self.stats.auth_failures += 1
            return _coded("Invalid API token", "UNAUTHORIZED")
        return tenant

    def _burst_error(self, reset_in: float) -> web.Response:
        return _coded(
            "Too many requests",
            "BAD_REQUEST.BURST_RATE_LIMIT_REACHED",
            {"resetAt": _iso_in(reset_in)},
        )

    def _graphql(self, entity: Entity, body: bytes) -> tuple[web.Response, bool]:
        """Parse, validate and execute one request; True when a batch was stored."""
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _bad_request("The body is not JSON."), False
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return _bad_request('The body must be a JSON object with a string "query".'), False
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if variables is not None and not isinstance(variables, dict):
            return _bad_request('"variables" must be an object or null.'), False
        if operation_name is not None and not isinstance(operation_name, str):
            return _bad_request('"operationName" must be a string or null.'), False

        schema = executable_schema()
        try:
            document, errors = _checked(payload["query"])
        except GraphQLError as exc:
            self.stats.rejected_validation += 1
            return web.json_response({"errors": [_formatted(exc)]}), False
        operation = get_operation_ast(document, operation_name)
        if operation is not None:
            if operation.operation is OperationType.MUTATION:
                self.stats.mutations += 1
            else:
                self.stats.queries += 1
        if errors:
            self.stats.rejected_validation += 1
            return web.json_response({"errors": [_formatted(e) for e in errors]}), False

        ctx = Context(self._ledger, entity)
        result = execute_sync(
            schema,
            document,
            context_value=ctx,
            variable_values=variables,
            operation_name=operation_name,
        )
        all_errors = [*(result.errors or []), *ctx.errors]
        out: dict[str, Any] = {}
        if all_errors:
            out["errors"] = [_formatted(e) for e in all_errors]
            if not ctx.batches:
                self.stats.rejected_validation += 1
        out["data"] = result.data
        return web.json_response(out), bool(ctx.batches)


# --- the CLI entry point --------------------------------------------------------------

_FIRST_OWNER_DB_ID = 42_365_431


def _token(ref: str, token_dir: Path | None) -> str:
    """The tenant's token from the environment or `token_dir`; where `token_dir` lacks it,
    a new one, written there for the worker to read."""
    from worker.xledger.secrets import MissingToken, SecretStore

    try:
        return SecretStore(token_dir=token_dir).token(ref).reveal()
    except MissingToken:
        if token_dir is None:
            raise
    if Path(ref).name != ref or ref.startswith("."):
        raise ValueError(f"token_ref {ref!r} cannot name a file in {token_dir}")
    token = secrets.token_urlsafe(24)
    token_dir.mkdir(parents=True, exist_ok=True)
    path = token_dir / ref
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)  # the file may have existed (empty) with a wider mode
    return token


def serve(
    port: int,
    profile: str,
    token_dir: Path | None,
    snapshots: Sequence[RegisterSnapshot],
    ledger: Path | None = None,
) -> None:
    """Serve an entity per snapshot (the caller's: the demo's tenants, say) until Ctrl-C
    or SIGTERM; with `ledger`, the lines of that dump (a demo's `--ledger-out`) are in
    Xledger from the start."""
    if profile not in PROFILES:
        raise ValueError(f"unknown fault profile {profile!r}; valid: {', '.join(PROFILES)}")
    sandbox = XledgerSandbox(faults=PROFILES[profile])
    names = []
    for i, snapshot in enumerate(snapshots):
        token = _token(snapshot.settings.token_ref, token_dir)
        sandbox.add_entity(token, entity_from_snapshot(snapshot, _FIRST_OWNER_DB_ID + i))
        names.append(snapshot.tenant_id)
    if ledger is not None:
        try:
            sandbox.load_ledger(ledger)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"cannot load the ledger {ledger}: {exc}") from None
    asyncio.run(_serve_until_stopped(sandbox, port, profile, names))


async def _serve_until_stopped(
    sandbox: XledgerSandbox, port: int, profile: str, names: list[str]
) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopped.set)
    url = await sandbox.start(port=port)
    tenants = ", ".join(names)
    print(f"Xledger sandbox at {url} (fault profile {profile}; tenants {tenants})", flush=True)
    try:
        await stopped.wait()
    finally:
        await sandbox.stop()
