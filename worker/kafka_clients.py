"""How this process connects to Kafka: the one place that turns the connection settings
(bootstrap address, TLS, SASL) into every Kafka client's arguments.

The worker's stream (`worker/engine/`) speaks aiokafka; the operator tools speak
kafka-python through the factories here (`consumer`, `producer`, `admin`). Both libraries
take the same security arguments (`security_protocol`, `ssl_context`, `sasl_mechanism`,
`sasl_plain_username`, `sasl_plain_password`), so `client_args` serves both. An
import-linter contract keeps every other module away from both libraries.

Secrets (a SASL password, a key's password) are files, read when a client is built (a
rotated secret is picked up by the next client), registered for masking
(`worker.logs.mask`) and never put in a message: an error names the file, its mode and
owner, never what it holds.

`--command-config FILE` (the operator tools, the demo) reads a client properties file as
Kafka's own tools take it; `from_properties` documents the subset understood.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from worker import logs
from worker.config import MECHANISMS, PROTOCOLS, KafkaSecurity

if TYPE_CHECKING:
    from aiokafka.conn import AIOKafkaConnection

__all__ = [
    "PLAINTEXT",
    "Bootstrap",
    "BrokerError",
    "BrokerFacts",
    "ConfigResource",
    "ConfigResourceType",
    "KafkaAdminClient",
    "KafkaConnection",
    "KafkaConsumer",
    "KafkaProducer",
    "KafkaRefused",
    "KafkaSettingsError",
    "KafkaUnreachable",
    "NewTopic",
    "TopicAlreadyExistsError",
    "TopicPartition",
    "admin",
    "client_args",
    "consumer",
    "from_properties",
    "probe",
    "producer",
]

PLAINTEXT = KafkaSecurity()

# kafka-python's names, for the operator tools (only this module imports the library).
BrokerError = KafkaError


class KafkaSettingsError(ValueError):
    """A connection setting that cannot work (a missing or unreadable file, an unknown
    protocol): restarting cannot cure it. Names the setting or file, never a secret."""


class KafkaRefused(KafkaSettingsError):
    """The broker answered and refused this process: its certificate is not one the CA
    vouches for, or the SASL user or password is wrong. Restarting cannot cure it."""


class KafkaUnreachable(ConnectionError):
    """No broker at the bootstrap address answered (it may be starting: a restart may cure it)."""


@dataclass(frozen=True)
class KafkaConnection:
    """A bootstrap address with the security to reach it. Its str is the address alone."""

    bootstrap: str
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def __str__(self) -> str:
        return self.bootstrap

    def describe(self) -> str:
        """For a message: the address and how it is reached, no secret."""
        s = self.security
        how = s.protocol
        if s.protocol.startswith("SASL"):
            how += f" {s.sasl_mechanism}"
        return f"{self.bootstrap} ({how})"


# A bare address is a PLAINTEXT connection: what the embedded broker, the development
# cluster and the tests use. Production code passes a KafkaConnection built from settings.
Bootstrap = KafkaConnection | str


def connection(bootstrap: Bootstrap, security: KafkaSecurity | None = None) -> KafkaConnection:
    if isinstance(bootstrap, KafkaConnection):
        return bootstrap if security is None else replace(bootstrap, security=security)
    return KafkaConnection(bootstrap, security or PLAINTEXT)


def check(security: KafkaSecurity) -> None:
    """The settings' own consistency (no file read): raises KafkaSettingsError."""
    s = security
    if s.protocol not in PROTOCOLS:
        raise KafkaSettingsError(
            f"FLYT_KAFKA_SECURITY_PROTOCOL={s.protocol!r} is not one of {', '.join(PROTOCOLS)}"
        )
    if s.protocol.startswith("SASL"):
        if s.sasl_mechanism not in MECHANISMS:
            raise KafkaSettingsError(
                f"FLYT_KAFKA_SASL_MECHANISM={s.sasl_mechanism!r} is not one of "
                f"{', '.join(MECHANISMS)}"
            )
        if s.sasl_jaas_file is None and (s.sasl_username_file is None or not s.sasl_password_file):
            raise KafkaSettingsError(
                f"{s.protocol} needs a user and a password: set FLYT_KAFKA_SASL_USERNAME_FILE "
                "and FLYT_KAFKA_SASL_PASSWORD_FILE (files, as a mounted secret gives them)"
            )
    if (s.ssl_cert_file is None) != (s.ssl_key_file is None):
        raise KafkaSettingsError(
            "mutual TLS needs both FLYT_KAFKA_SSL_CERT_FILE and FLYT_KAFKA_SSL_KEY_FILE"
        )


def client_args(bootstrap: Bootstrap) -> dict[str, Any]:
    """The arguments every client takes alike, aiokafka's and kafka-python's: the address,
    and for a secured cluster its TLS context and SASL credentials (read now)."""
    conn = connection(bootstrap)
    s = conn.security
    check(s)
    args: dict[str, Any] = {"bootstrap_servers": conn.bootstrap}
    if s.protocol == "PLAINTEXT":
        return args
    args["security_protocol"] = s.protocol
    if s.protocol in ("SSL", "SASL_SSL"):
        args["ssl_context"] = ssl_context(s)
    if s.protocol.startswith("SASL"):
        user, password = credentials(s)
        args["sasl_mechanism"] = s.sasl_mechanism
        args["sasl_plain_username"] = user
        args["sasl_plain_password"] = password
    return args


def ssl_context(s: KafkaSecurity) -> ssl.SSLContext:
    """TLS 1.2 or later; the broker's certificate checked against the CA file (else the
    system's CAs) and, unless turned off, against the host name it was reached by."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = s.ssl_check_hostname
    if s.ssl_ca_file is not None:
        _readable(s.ssl_ca_file, "FLYT_KAFKA_SSL_CA_FILE")
        try:
            context.load_verify_locations(cafile=str(s.ssl_ca_file))
        except (ssl.SSLError, ValueError):
            raise KafkaSettingsError(
                f"FLYT_KAFKA_SSL_CA_FILE {s.ssl_ca_file} holds no PEM certificate"
            ) from None
    if s.ssl_cert_file is not None and s.ssl_key_file is not None:
        _readable(s.ssl_cert_file, "FLYT_KAFKA_SSL_CERT_FILE")
        _readable(s.ssl_key_file, "FLYT_KAFKA_SSL_KEY_FILE")
        password = (
            read_secret(s.ssl_key_password_file, "FLYT_KAFKA_SSL_KEY_PASSWORD_FILE")
            if s.ssl_key_password_file is not None
            else None
        )
        try:
            context.load_cert_chain(str(s.ssl_cert_file), str(s.ssl_key_file), password)
        except (ssl.SSLError, ValueError):
            raise KafkaSettingsError(
                f"the client certificate {s.ssl_cert_file} and key {s.ssl_key_file} cannot be "
                "loaded: PEM files of one pair, the key's password (if any) in "
                "FLYT_KAFKA_SSL_KEY_PASSWORD_FILE"
            ) from None
    return context


def credentials(s: KafkaSecurity) -> tuple[str, str]:
    """The SASL user and password, from their files (or a properties file's
    sasl.jaas.config); the password is registered for masking."""
    if s.sasl_jaas_file is not None:
        props = _properties(read_secret(s.sasl_jaas_file, "--command-config"))
        if "sasl.jaas.config" not in props and props.get("sasl.username"):
            user, password = props["sasl.username"], props.get("sasl.password", "")
            if not password:
                raise KafkaSettingsError(f"--command-config {s.sasl_jaas_file}: no sasl.password")
        else:
            user, password = _jaas_credentials(props.get("sasl.jaas.config", ""), s.sasl_jaas_file)
    else:
        assert s.sasl_username_file is not None and s.sasl_password_file is not None
        user = read_secret(s.sasl_username_file, "FLYT_KAFKA_SASL_USERNAME_FILE")
        password = read_secret(s.sasl_password_file, "FLYT_KAFKA_SASL_PASSWORD_FILE")
    logs.register_secret(password)
    return user, password


def read_secret(path: Path, setting: str) -> str:
    """A secret file's content, stripped. Missing, unreadable and empty are three errors,
    each naming the file (and for an unreadable one its mode and owner), never the content."""
    _readable(path, setting)
    try:
        value = path.read_text("utf-8").strip()
    except UnicodeDecodeError:
        raise KafkaSettingsError(f"{setting} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise KafkaSettingsError(_unreadable(path, setting, exc)) from None
    if not value:
        raise KafkaSettingsError(f"{setting} {path} is empty")
    return value


def _readable(path: Path, setting: str) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KafkaSettingsError(f"{setting} {path} does not exist") from None
    except OSError as exc:
        raise KafkaSettingsError(_unreadable(path, setting, exc)) from None
    if not stat.S_ISREG(info.st_mode):
        raise KafkaSettingsError(f"{setting} {path} is not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise KafkaSettingsError(_unreadable(path, setting, exc)) from None


def _unreadable(path: Path, setting: str, exc: OSError) -> str:
    try:
        info = path.stat()
        owner = f"mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid} gid {info.st_gid}"
    except OSError:
        owner = "mode unknown"
    return (
        f"{setting} {path} cannot be read by this process (uid {os.getuid()}, gid "
        f"{os.getgid()}): {exc.strerror or type(exc).__name__}; the file has {owner}"
    )


# --- --command-config: a client properties file, as Kafka's own tools take it ---------------

_UNDERSTOOD = {
    "security.protocol",
    "sasl.mechanism",
    "sasl.jaas.config",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    # librdkafka's names (kcat, confluent-kafka), for files written for those clients
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "sasl.username",
    "sasl.password",
    "sasl.mechanisms",
}
# Harmless settings Kafka's tools files often carry, ignored without a word.
_IGNORED = {"client.id", "request.timeout.ms", "default.api.timeout.ms", "retries"}


def from_properties(path: Path, warn: Callable[[str], None] | None = None) -> KafkaSecurity:
    """The security a client properties file asks for (`--command-config FILE`).

    Understood: `security.protocol`; `sasl.mechanism` (SCRAM-SHA-512, SCRAM-SHA-256,
    PLAIN) with `sasl.jaas.config` (ScramLoginModule or PlainLoginModule, `username="…"
    password="…"`); `ssl.truststore.location` with `ssl.truststore.type=PEM` (a CA file);
    `ssl.keystore.location` with `ssl.keystore.type=PEM` (the client's key and certificate
    in one PEM file) and `ssl.key.password`; `ssl.endpoint.identification.algorithm` (empty
    turns the host name check off); librdkafka's `ssl.ca.location`,
    `ssl.certificate.location`, `ssl.key.location`, `sasl.username`/`sasl.password`.
    JKS and PKCS12 stores are refused with how to convert them; any other key is named
    in a warning and ignored. The file itself is the secret (it may hold the password):
    only its path is kept, and it is read again when a client is built."""
    text = read_secret(path, "--command-config")
    props = _properties(text)
    say = warn or (lambda _line: None)
    for key in sorted(props):
        if key not in _UNDERSTOOD and key not in _IGNORED:
            say(f"--command-config {path}: {key} is not used by this tool (ignored)")
    protocol = props.get("security.protocol", "PLAINTEXT").strip().upper()
    mechanism = (
        (
            props.get("sasl.mechanism") or props.get("sasl.mechanisms") or "GSSAPI"
            if protocol.startswith("SASL")
            else "SCRAM-SHA-512"
        )
        .strip()
        .upper()
    )
    if protocol not in PROTOCOLS:
        raise KafkaSettingsError(
            f"--command-config {path}: security.protocol={protocol} is not one of "
            f"{', '.join(PROTOCOLS)}"
        )
    if protocol.startswith("SASL") and mechanism not in MECHANISMS:
        raise KafkaSettingsError(
            f"--command-config {path}: sasl.mechanism={mechanism} is not supported here "
            f"(one of {', '.join(MECHANISMS)})"
        )
    for store in ("truststore", "keystore"):
        kind = props.get(f"ssl.{store}.type", "PEM" if f"ssl.{store}.location" in props else "")
        if kind and kind.upper() != "PEM":
            raise KafkaSettingsError(
                f"--command-config {path}: ssl.{store}.type={kind} is not read here; give PEM "
                f"files (`keytool -exportcert -rfc` for a CA, `openssl pkcs12 -nodes` for a key)"
            )
    ca = props.get("ssl.truststore.location") or props.get("ssl.ca.location") or ""
    keystore = props.get("ssl.keystore.location", "")
    cert = props.get("ssl.certificate.location") or keystore
    key = props.get("ssl.key.location") or keystore
    if "ssl.key.password" in props:
        raise KafkaSettingsError(
            f"--command-config {path}: an encrypted key is not read from the properties; "
            "decrypt it (`openssl pkey`) or use FLYT_KAFKA_SSL_KEY_PASSWORD_FILE"
        )
    security = KafkaSecurity(
        protocol=protocol,
        ssl_ca_file=Path(ca) if ca else None,
        ssl_cert_file=Path(cert) if cert else None,
        ssl_key_file=Path(key) if key else None,
        ssl_check_hostname=props.get("ssl.endpoint.identification.algorithm", "https").strip()
        != "",
        sasl_mechanism=mechanism,
        sasl_jaas_file=path if protocol.startswith("SASL") else None,
    )
    check(security)
    if protocol.startswith("SASL"):
        credentials(security)  # refuse a file without them now, not at the first client
    return security


def _properties(text: str) -> dict[str, str]:
    """Java properties: `key=value` or `key: value` lines, `#`/`!` comments, a trailing
    backslash continuing a line (enough for the client files Kafka's tools take)."""
    out: dict[str, str] = {}
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        parts = re.split(r"\s*[=:]\s*", line, maxsplit=1)
        key = parts[0].strip()
        value = parts[1].strip() if len(parts) > 1 else ""
        out[key] = value
    return out


_JAAS = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')


def _jaas_credentials(jaas: str, path: Path) -> tuple[str, str]:
    module = jaas.split(None, 1)[0] if jaas.strip() else ""
    if module and not module.endswith(("ScramLoginModule", "PlainLoginModule")):
        raise KafkaSettingsError(
            f"--command-config {path}: sasl.jaas.config uses {module}; only "
            "ScramLoginModule and PlainLoginModule (a user and a password) are supported"
        )
    found = dict(_JAAS.findall(jaas))
    user, password = found.get("username"), found.get("password")
    if not user or not password:
        raise KafkaSettingsError(
            f'--command-config {path}: sasl.jaas.config has no username="…" and password="…"'
        )
    return user, password.replace('\\"', '"')


# --- the connection check and the broker's facts (aiokafka, for the worker) ---------------


@dataclass(frozen=True)
class BrokerFacts:
    api_keys: frozenset[int]  # the request kinds the broker serves
    brokers: int  # how many brokers the cluster's metadata lists


async def probe(bootstrap: Bootstrap, timeout_s: float = 30.0) -> BrokerFacts:
    """Connect as every client will (TLS, SASL), ask the broker which requests it serves
    and how many brokers the cluster has.

    A refusal (a certificate the CA does not vouch for, a wrong password, a mechanism the
    broker does not offer) raises KafkaRefused at once: a retry cannot cure it. No answer
    from any bootstrap host is tried again until `timeout_s`, then KafkaUnreachable."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError as AioKafkaError
    from aiokafka.protocol.admin import ApiVersionRequest
    from aiokafka.protocol.metadata import MetadataRequest

    conn = connection(bootstrap)
    args = client_args(conn)
    security = {k: v for k, v in args.items() if k != "bootstrap_servers"}
    hosts = [h.strip() for h in conn.bootstrap.split(",") if h.strip()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no address"
    while True:
        for address in hosts:
            host, _, port = address.rpartition(":")
            host = host.strip("[]")
            remaining = max(1.0, deadline - loop.time())
            broker: AIOKafkaConnection | None = None
            try:
                broker = await create_conn(
                    host,
                    int(port),
                    client_id="flyt-xledger-probe",
                    request_timeout_ms=int(min(remaining, 10.0) * 1000),
                    **security,
                )
                versions = await broker.send(ApiVersionRequest())
                metadata = await broker.send(MetadataRequest([]))
                return BrokerFacts(
                    frozenset(int(k) for k, *_ in versions.api_versions),
                    len(metadata.brokers),
                )
            except ssl.SSLCertVerificationError as exc:
                raise KafkaRefused(_tls_refused(conn, address, exc)) from None
            except ssl.SSLError as exc:
                raise KafkaRefused(
                    f"TLS with the broker at {address} failed ({exc.reason or exc}): does its "
                    f"listener speak {conn.security.protocol}? (FLYT_KAFKA_SECURITY_PROTOCOL)"
                ) from None
            except AioKafkaError as exc:
                if _is_auth_failure(exc):
                    raise KafkaRefused(_sasl_refused(conn, address, exc)) from None
                last = f"{address}: {type(exc).__name__}: {logs.mask(str(exc))}"
            except (OSError, TimeoutError, ValueError) as exc:
                last = f"{address}: {type(exc).__name__}: {logs.mask(str(exc))}"
            finally:
                if broker is not None:
                    broker.close()
        if loop.time() >= deadline:
            hint = ""
            if conn.security.protocol == "PLAINTEXT":
                hint = (
                    "; if the listener takes TLS or SASL, set FLYT_KAFKA_SECURITY_PROTOCOL "
                    "(a plain client's first request makes such a broker close the connection)"
                )
            raise KafkaUnreachable(
                f"no broker at {conn.describe()} answered within {timeout_s:.0f} s "
                f"(last: {last}){hint}"
            )
        await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))


def _is_auth_failure(exc: Exception) -> bool:
    from aiokafka import errors

    return isinstance(
        exc,
        errors.SaslAuthenticationFailed
        | errors.AuthenticationFailedError
        | errors.AuthenticationMethodNotSupported
        | errors.UnsupportedSaslMechanismError
        | errors.IllegalSaslStateError,
    )


def _tls_refused(conn: KafkaConnection, address: str, exc: ssl.SSLCertVerificationError) -> str:
    s = conn.security
    trust = f"the CA in {s.ssl_ca_file}" if s.ssl_ca_file else "the system's CAs"
    return (
        f"TLS: the broker at {address} presented a certificate that {trust} cannot vouch for "
        f"({exc.verify_message or exc.reason}); set FLYT_KAFKA_SSL_CA_FILE to the CA that "
        "signed the brokers' certificates"
    )


def _sasl_refused(conn: KafkaConnection, address: str, exc: Exception) -> str:
    s = conn.security
    where = (
        f"the user and password in {s.sasl_jaas_file}"
        if s.sasl_jaas_file
        else f"FLYT_KAFKA_SASL_USERNAME_FILE ({s.sasl_username_file}) and "
        f"FLYT_KAFKA_SASL_PASSWORD_FILE ({s.sasl_password_file})"
    )
    said = logs.mask(str(exc)).strip() or type(exc).__name__
    return (
        f"SASL {s.sasl_mechanism}: the broker at {address} refused the credentials "
        f"({said}); check {where}"
    )


# --- the operator tools' clients (kafka-python: short synchronous commands) ---------------


def consumer(bootstrap: Bootstrap, **kwargs: Any) -> KafkaConsumer:
    return KafkaConsumer(**client_args(bootstrap), **kwargs)


def producer(bootstrap: Bootstrap, **kwargs: Any) -> KafkaProducer:
    return KafkaProducer(**client_args(bootstrap), **kwargs)


def admin(bootstrap: Bootstrap, **kwargs: Any) -> KafkaAdminClient:
    return KafkaAdminClient(**client_args(bootstrap), **kwargs)
