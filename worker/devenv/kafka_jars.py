"""Apache Kafka's jars from Maven Central: the version `deploy/kafka/pom.xml` names,
resolved once by Maven into a cache outside git (`cache_dir`), and the class-data archive's
place beside them. `kafka_cluster.py` runs brokers from them."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from worker.devenv.children import dies_with_parent

POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
_MARKER = ".complete"  # written last, holds the pom's digest: a cache without it is redone
_MVN_TIMEOUT_S = 900.0


class KafkaUnavailable(RuntimeError):
    """Apache Kafka cannot be run here (no java or mvn, the jars could not be fetched,
    or a broker would not start). The message is one line and says what to do."""


def kafka_version() -> str:
    """The Kafka version deploy/kafka/pom.xml names (its kafka.version property)."""
    try:
        root = ET.parse(POM).getroot()
    except (OSError, ET.ParseError) as exc:
        raise KafkaUnavailable(f"cannot read {POM}: {exc}") from None
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = root.findtext("m:properties/m:kafka.version", namespaces=ns)
    if not version:
        raise KafkaUnavailable(f"{POM} names no kafka.version property")
    return version.strip()


def cache_dir() -> Path:
    """Where the jars of this Kafka version are kept: `$FLYT_KAFKA_CACHE/kafka-<version>`,
    by default under ~/.cache/flyt-xledger."""
    root = os.environ.get("FLYT_KAFKA_CACHE") or Path.home() / ".cache" / "flyt-xledger"
    return Path(root).expanduser() / f"kafka-{kafka_version()}"


def kafka_classpath() -> str:
    """The broker's classpath; the first call on a machine downloads the jars (Maven)."""
    target = cache_dir()
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if not _complete(target, digest):
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f"{target.name}.lock", "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be resolving the same
            if not _complete(target, digest):
                _resolve(target, digest)
    return os.pathsep.join(str(p) for p in sorted(target.glob("*.jar")))


def _complete(target: Path, digest: str) -> bool:
    try:
        return (target / _MARKER).read_text().strip() == digest
    except OSError:
        return False


def _resolve(target: Path, digest: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable(
            "mvn not found: install Maven (apt-get install maven) to fetch Apache Kafka's jars"
        )
    for stale in target.parent.glob(f".{target.name}.*"):  # left by a killed resolver
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        cmd = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM)]
        cmd.append("dependency:copy-dependencies")
        cmd.append(f"-DoutputDirectory={tmp}")
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=_MVN_TIMEOUT_S,
                check=False,
                preexec_fn=dies_with_parent(),
            )
        except subprocess.TimeoutExpired:
            raise KafkaUnavailable(
                f"mvn did not fetch Kafka {kafka_version()}'s jars within {_MVN_TIMEOUT_S:.0f} s"
            ) from None
        if done.returncode != 0 or not any(tmp.glob("kafka_*.jar")):
            said = _mvn_said(done.stdout + done.stderr)
            raise KafkaUnavailable(
                f"mvn could not fetch Kafka {kafka_version()}'s jars (exit {done.returncode}; "
                f"is Maven Central reachable?): {said}"
            )
        (tmp / _MARKER).write_text(digest + "\n")
        if target.exists():  # an older or interrupted copy
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _mvn_said(output: str) -> str:
    """mvn's last lines before its boilerplate advice, as one line."""
    lines = []
    for line in re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines():
        if "To see the full stack trace" in line:
            break
        if line.removeprefix("[ERROR]").strip():
            lines.append(line)
    return one_line(lines[-4:]) or "no output"


def one_line(lines: list[str]) -> str:
    return " | ".join(s for line in lines if (s := " ".join(line.split())[:300]))


def archive_path(classpath: str) -> Path:
    """The class-data archive for this classpath and this JVM (an archive from another
    JVM build or classpath would only be refused, with a warning)."""
    java = Path(shutil.which("java") or "java").resolve()
    libjvm = java.parent.parent / "lib" / "server" / "libjvm.so"
    st = (libjvm if libjvm.exists() else java).stat()
    key = f"{java}|{st.st_size}|{st.st_mtime_ns}|{classpath}"
    return cache_dir() / f"classes-{hashlib.sha256(key.encode()).hexdigest()[:12]}.jsa"
