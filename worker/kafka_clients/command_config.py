"""`--command-config FILE` (the operator tools, the demo): a client properties file as
Kafka's own tools take it; `from_properties` documents the subset understood. The file
itself is the secret (it may hold the password): only its path is kept, and it is read
again when a client is built (`sasl_credentials`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from worker import logs
from worker.config import MECHANISMS, PROTOCOLS, KafkaSecurity
from worker.kafka_clients.connection import check
from worker.kafka_clients.errors import KafkaSettingsError
from worker.kafka_clients.secret_files import read_secret

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
        # Refuse a file without them now, not at the first client.
        logs.register_secret(sasl_credentials(path)[1])
    return security


def sasl_credentials(path: Path) -> tuple[str, str]:
    """The SASL user and password a properties file holds: librdkafka's `sasl.username` and
    `sasl.password`, else `sasl.jaas.config`'s. Not registered for masking: the caller does."""
    props = _properties(read_secret(path, "--command-config"))
    if "sasl.jaas.config" not in props and props.get("sasl.username"):
        user, password = props["sasl.username"], props.get("sasl.password", "")
        if not password:
            raise KafkaSettingsError(f"--command-config {path}: no sasl.password")
        return user, password
    return _jaas_credentials(props.get("sasl.jaas.config", ""), path)


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
