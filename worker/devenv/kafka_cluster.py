"""Apache Kafka (KRaft) from Maven Central's jars: 1 or 3 brokers on loopback, no Docker.

The jars are resolved once by Maven (`kafka_jars.py`: `deploy/kafka/pom.xml` names the
version) into a cache outside git; each broker is a JVM in combined mode (broker and
controller), with its storage in a temporary folder removed on stop. For tests that need
the real thing: `with KafkaCluster(brokers=3) as k: k.bootstrap`, and `k.kill(2)` /
`k.restart(2)`.

`KafkaCluster(sasl_ssl=True)` serves clients on a SASL_SSL listener only (SCRAM-SHA-512
and -256, TLS with a throw-away CA and broker certificate made by `openssl` in the
cluster's folder), as most production clusters do: the SCRAM users are created when the
storage is formatted, and `k.client` holds what a client needs (CA file, user and
password files, a client properties file for `--command-config`; `kafka_sasl.py`).
Passwords reach the JVMs through files, never their command lines.

The JVMs share one class-data archive (AppCDS), which halves a broker's start on a small
machine: the first broker to stop cleanly writes it into the cache, next to the jars.

Every JVM is in its own process group and is SIGKILLed by Linux when the process that
started it dies (PR_SET_PDEATHSIG), so nothing outlives its parent. The signal follows
the *thread* that started the JVM: call start() and restart() from a thread that lives as
long as the cluster (the main thread, normally).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from worker.devenv.children import dies_with_parent
from worker.devenv.kafka_jars import (
    POM,
    KafkaUnavailable,
    archive_path,
    cache_dir,
    kafka_classpath,
    kafka_version,
    one_line,
)
from worker.devenv.kafka_sasl import CLIENT_USER, Secrets, SecuredClient, make_secrets

if TYPE_CHECKING:
    from worker.kafka_clients.connection import KafkaConnection

# Importable from here too: what a caller of the cluster names.
__all__ = [
    "CLIENT_USER",
    "POM",
    "KafkaCluster",
    "KafkaUnavailable",
    "SecuredClient",
    "cache_dir",
    "kafka_classpath",
    "kafka_version",
]

_STOP_TIMEOUT_S = 15.0
# The admin client that waits for the brokers; kafka-python 3 would otherwise spend 30 s
# bootstrapping against a port that is not open yet.
_ADMIN = {
    "client_id": "flyt-kafka-cluster",
    "request_timeout_ms": 3000,
    "bootstrap_timeout_ms": 3000,
    "reconnect_backoff_max_ms": 500,
}

# Kafka's own launch flags (bin/kafka-run-class.sh) less G1's pause tuning: SerialGC
# starts as fast, and a small heap has little to gain from a concurrent collector.
_JVM_FLAGS = ("-server", "-XX:+UseSerialGC", "-XX:+DisableExplicitGC", "-Djava.awt.headless=true")

_LOG4J2 = """\
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
"""


def _cluster_id() -> str:
    """A random Kafka Uuid as Kafka prints it (url-safe base64, 22 characters)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids these too: they read as a flag
            return cid


class KafkaCluster:
    """n Apache Kafka brokers (KRaft, combined mode) on 127.0.0.1; node ids 1..n.

    `port` is node 1's client port, node i's is port+i-1 (if None, free ports below the
    ephemeral range); the controller listeners take other such ports.
    """

    def __init__(
        self,
        brokers: int = 1,
        port: int | None = None,
        log_dir: Path | None = None,
        heap_mb: int = 384,
        sasl_ssl: bool = False,
    ) -> None:
        if brokers < 1:
            raise ValueError("brokers must be at least 1")
        self.n = brokers
        self.sasl_ssl = sasl_ssl
        self.client: SecuredClient | None = None  # with sasl_ssl, once started
        self._secure: Secrets | None = None
        self.ports = [port + i for i in range(brokers)] if port else _free_ports(brokers)
        self.controller_ports = _free_ports(brokers, avoid=self.ports)
        self.log_dir = log_dir
        self.heap_mb = heap_mb
        self._root: Path | None = None
        self._classpath = ""
        self._archive: Path | None = None
        self._dumping: tuple[subprocess.Popen[bytes], Path] | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def log_path(self, i: int) -> Path:
        """Broker i's log (its stdout and stderr)."""
        base = self.log_dir if self.log_dir is not None else self._root
        if base is None:
            raise RuntimeError("the cluster is not started")
        return Path(base) / f"broker-{i}.log"

    def start(self, timeout_s: float = 60.0) -> KafkaCluster:
        """Format storage, start every broker, and return once all n are registered."""
        if self._procs:
            raise RuntimeError("the cluster is already started")
        if shutil.which("java") is None:
            raise KafkaUnavailable(
                "java not found: install a JDK 17+ (apt-get install openjdk-17-jre-headless)"
            )
        self._classpath = kafka_classpath()
        self._archive = archive_path(self._classpath)
        self._root = Path(tempfile.mkdtemp(prefix=f"flyt-kafka-{self.ports[0]}-"))
        atexit.register(self.stop)
        try:
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
            (self._root / "log4j2.properties").write_text(_LOG4J2)
            if self.sasl_ssl:
                self._secure = make_secrets(self._root / "tls")
                self.client = self._secure.client
            for i in self._ids():
                (self._root / f"broker-{i}").mkdir()
                self._properties(i).write_text(self._config(i))
            self._format()
            for i in self._ids():
                self._launch(i)
            self._await(set(self._ids()), timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every broker (SIGTERM, then SIGKILL after 15 s) and remove the storage."""
        procs, self._procs = self._procs, {}
        for proc in procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self._keep_archive()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        atexit.unregister(self.stop)

    def alive(self, i: int) -> bool:
        proc = self._procs.get(self._check(i))
        return proc is not None and proc.poll() is None

    def kill(self, i: int) -> None:
        """SIGKILL broker i (no clean shutdown) and wait until its process is gone."""
        proc = self._procs.get(self._check(i))
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self._keep_archive()  # a killed JVM leaves none

    def restart(self, i: int, timeout_s: float = 60.0) -> None:
        """Start broker i again on its ports and storage; return once it is registered."""
        if self._root is None:
            raise RuntimeError("the cluster is not started")
        if self.alive(i):
            raise RuntimeError(f"broker {i} is running")
        self._launch(i)
        self._await({j for j in self._ids() if self.alive(j)}, timeout_s)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, i: int, lines: int = 8) -> str:
        """The last lines of broker i's log, as one line."""
        try:
            with open(self.log_path(i), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode("utf-8", "replace")
        except (OSError, RuntimeError):
            return "no log"
        return one_line([s for s in text.splitlines() if s.strip()][-lines:]) or "log empty"

    def _ids(self) -> range:
        return range(1, self.n + 1)

    def _check(self, i: int) -> int:
        if i not in self._ids():
            raise ValueError(f"no broker {i}: node ids are 1..{self.n}")
        return i

    def _properties(self, i: int) -> Path:
        assert self._root is not None
        return self._root / f"broker-{i}" / "server.properties"

    def _config(self, i: int) -> str:
        assert self._root is not None
        n, port, cport = self.n, self.ports[i - 1], self.controller_ports[i - 1]
        conf = {
            "process.roles": "broker,controller",
            "node.id": i,
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self._root / f"broker-{i}" / "data",
            "offsets.topic.replication.factor": n,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": n,
            "transaction.state.log.min.isr": min(2, n),
            "transaction.state.log.num.partitions": 10,
            "share.coordinator.state.topic.replication.factor": n,
            "share.coordinator.state.topic.min.isr": min(2, n),
            "default.replication.factor": n,
            "min.insync.replicas": min(2, n),
            "num.partitions": 4,
            "auto.create.topics.enable": "true",
            "group.initial.rebalance.delay.ms": 0,
            # Small: fewer threads, 16 MiB segments, an 8 MiB cleaner buffer (128 MiB of
            # heap by default).
            "num.network.threads": 2,
            "num.io.threads": 4,
            "background.threads": 4,
            "log.segment.bytes": 16 * 1024 * 1024,
            "log.index.size.max.bytes": 1024 * 1024,
            "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
            # A killed broker is fenced (its partitions move) after 6 s, not 9.
            "broker.heartbeat.interval.ms": 1000,
            "broker.session.timeout.ms": 6000,
        }
        if self._secure is not None:
            conf.update(self._secure.broker_config(port, cport))
        voters = [f"{j}@127.0.0.1:{self.controller_ports[j - 1]}" for j in self._ids()]
        if n == 1:  # a dynamic quorum of one, formatted --standalone (Kafka's own default)
            conf["controller.quorum.bootstrap.servers"] = f"127.0.0.1:{cport}"
        else:  # a static quorum: every node knows the voters from its configuration
            conf["controller.quorum.voters"] = ",".join(voters)
        return "".join(f"{k}={v}\n" for k, v in conf.items())

    def _java(self, main: str, *args: str, heap_mb: int, cds: list[str]) -> list[str]:
        assert self._root is not None
        return [
            "java",
            f"-Xmx{heap_mb}m",
            f"-Xms{heap_mb // 2}m",
            *_JVM_FLAGS,
            *cds,
            f"-Dlog4j2.configurationFile=file:{self._root / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self._root}",
            "-cp",
            self._classpath,
            main,
            *args,
        ]

    def _format(self) -> None:
        cid = _cluster_id()
        standalone = ["--standalone"] if self.n == 1 else []
        scram = self._secure.add_scram() if self._secure is not None else []
        runs = {
            i: subprocess.Popen(
                self._argfile(
                    self._java(
                        "kafka.tools.StorageTool",
                        "format",
                        "-t",
                        cid,
                        "-c",
                        str(self._properties(i)),
                        *standalone,
                        *scram,
                        heap_mb=256,
                        cds=self._cds_use(),
                    ),
                    i,
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=dies_with_parent(),
                start_new_session=True,
            )
            for i in self._ids()
        }
        try:
            for i, run in runs.items():
                out, _ = run.communicate(timeout=120)
                if run.returncode != 0:
                    said = one_line(out.decode("utf-8", "replace").splitlines()[-6:])
                    raise KafkaUnavailable(f"formatting broker {i}'s storage failed: {said}")
        finally:
            for run in runs.values():
                if run.poll() is None:
                    _signal_group(run, signal.SIGKILL)
                    run.wait()

    def _argfile(self, cmd: list[str], i: int) -> list[str]:
        """`cmd` with its arguments in a java @argfile (mode 0600): the SCRAM passwords
        given to the storage format never show in the process list."""
        assert self._root is not None
        java, *rest = cmd
        path = self._root / f"broker-{i}" / "format.args"
        path.touch(mode=0o600)
        path.write_text("\n".join(f'"{a}"' for a in rest) + "\n")
        return [java, f"@{path}"]

    def _cds_use(self) -> list[str]:
        if self._archive is not None and self._archive.exists():
            return [f"-XX:SharedArchiveFile={self._archive}"]
        return []

    def _launch(self, i: int) -> None:
        cds, dump = self._cds_use(), None
        if not cds and self._dumping is None and self._archive is not None:
            for stale in self._archive.parent.glob(f"{self._archive.name}.*.tmp"):
                with contextlib.suppress(OSError):
                    if time.time() - stale.stat().st_mtime > 3600:  # its writer was killed
                        stale.unlink()
            dump = self._archive.with_name(f"{self._archive.name}.{uuid.uuid4().hex[:12]}.tmp")
            cds = [f"-XX:ArchiveClassesAtExit={dump}"]
        cmd = self._java("kafka.Kafka", str(self._properties(i)), heap_mb=self.heap_mb, cds=cds)
        with open(self.log_path(i), "ab") as log:
            self._procs[i] = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=dies_with_parent(),
                start_new_session=True,
            )
        if dump is not None:
            self._dumping = (self._procs[i], dump)

    def _keep_archive(self) -> None:
        """Once the JVM that was writing the class-data archive has exited, keep the
        archive if it is whole (a JVM killed mid-write leaves a torn one, which would
        crash every JVM that maps it: it is tried with -Xshare:on first)."""
        if self._dumping is None or self._dumping[0].poll() is None:
            return
        (proc, dump), self._dumping = self._dumping, None
        try:
            if proc.returncode != -signal.SIGKILL and dump.exists() and self._archive:
                probe = ["java", "-Xshare:on", f"-XX:SharedArchiveFile={dump}", "-cp"]
                probe += [self._classpath, "kafka.tools.StorageTool", "random-uuid"]
                with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                    if subprocess.run(probe, capture_output=True, timeout=60).returncode == 0:
                        dump.replace(self._archive)
        finally:
            dump.unlink(missing_ok=True)

    def _await(self, nodes: set[int], timeout_s: float) -> None:
        """Until the cluster's metadata lists every one of `nodes`, unfenced."""
        from worker.kafka_clients import sync_clients
        from worker.kafka_clients.sync_clients import BrokerError as KafkaError

        deadline = time.monotonic() + timeout_s
        bootstrap = ",".join(f"127.0.0.1:{self.ports[i - 1]}" for i in sorted(nodes))
        admin: sync_clients.KafkaAdminClient | None = None
        seen: set[int] = set()
        try:
            while True:
                for i in nodes:
                    if not self.alive(i):
                        raise KafkaUnavailable(
                            f"Kafka broker {i} exited while starting; its log ends: "
                            f"{self.log_tail(i)}"
                        )
                try:
                    if admin is None and any(_listens(self.ports[i - 1]) for i in nodes):
                        admin = sync_clients.admin(self._connection(bootstrap), **_ADMIN)
                    if admin is not None:
                        info = admin.describe_cluster()
                        seen = {int(b["broker_id"]) for b in info["brokers"] if not b["is_fenced"]}
                        if nodes <= seen:
                            return
                except (KafkaError, OSError, ValueError):
                    if admin is not None:
                        with contextlib.suppress(Exception):
                            admin.close()
                        admin = None
                if time.monotonic() > deadline:
                    missing = min(nodes - seen)
                    raise TimeoutError(
                        f"Kafka broker {missing} was not in the cluster after {timeout_s:.0f} s; "
                        f"its log ends: {self.log_tail(missing)}"
                    )
                time.sleep(0.25)
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.close()

    def _connection(self, bootstrap: str) -> KafkaConnection:
        from worker.kafka_clients.connection import connection

        security = self.client.security() if self.client is not None else None
        return connection(bootstrap, security)


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_ports(n: int, avoid: list[int] | None = None) -> list[int]:
    """n consecutive free ports below the kernel's ephemeral range: a broker that is killed
    and restarted binds its ports again, and a port from that range may by then have gone
    to any socket bound to port 0, or to an outgoing connection."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(500):
        first = rng.randrange(10000, max(10001, low - n))
        block = list(range(first, first + n))
        if not set(block) & set(avoid or []) and all(_bindable(p) for p in block):
            return block
    raise KafkaUnavailable(f"found no {n} free consecutive ports on 127.0.0.1 below {low}")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
