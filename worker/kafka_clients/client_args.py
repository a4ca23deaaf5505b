"""The arguments every Kafka client takes alike, aiokafka's and kafka-python's: the
bootstrap address and, for a secured cluster, its TLS context and SASL credentials, read
from their files when a client is built (a rotated secret is picked up by the next one)."""

from __future__ import annotations

import ssl
from typing import Any

from worker import logs
from worker.config import KafkaSecurity
from worker.kafka_clients.command_config import sasl_credentials
from worker.kafka_clients.connection import Bootstrap, check, connection
from worker.kafka_clients.errors import KafkaSettingsError
from worker.kafka_clients.secret_files import read_secret, readable


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
        readable(s.ssl_ca_file, "FLYT_KAFKA_SSL_CA_FILE")
        try:
            context.load_verify_locations(cafile=str(s.ssl_ca_file))
        except (ssl.SSLError, ValueError):
            raise KafkaSettingsError(
                f"FLYT_KAFKA_SSL_CA_FILE {s.ssl_ca_file} holds no PEM certificate"
            ) from None
    if s.ssl_cert_file is not None and s.ssl_key_file is not None:
        readable(s.ssl_cert_file, "FLYT_KAFKA_SSL_CERT_FILE")
        readable(s.ssl_key_file, "FLYT_KAFKA_SSL_KEY_FILE")
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
        user, password = sasl_credentials(s.sasl_jaas_file)
    else:
        assert s.sasl_username_file is not None and s.sasl_password_file is not None
        user = read_secret(s.sasl_username_file, "FLYT_KAFKA_SASL_USERNAME_FILE")
        password = read_secret(s.sasl_password_file, "FLYT_KAFKA_SASL_PASSWORD_FILE")
    logs.register_secret(password)
    return user, password
