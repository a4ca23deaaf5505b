"""A Kafka connection: a bootstrap address with the security to reach it, and that
security's own consistency (checked before any file is read)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from worker.config import MECHANISMS, PROTOCOLS, KafkaSecurity
from worker.kafka_clients.errors import KafkaSettingsError


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
    return KafkaConnection(bootstrap, security or KafkaSecurity())


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
