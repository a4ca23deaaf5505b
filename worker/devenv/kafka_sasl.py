"""A SASL_SSL Kafka cluster's secrets, for `KafkaCluster(sasl_ssl=True)`: a throw-away CA
and broker certificate made by `openssl`, random SCRAM passwords (SCRAM-SHA-512 and -256),
the brokers' listener settings, and what a client needs as files (`SecuredClient`)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from worker.config import KafkaSecurity
from worker.devenv.kafka_jars import KafkaUnavailable, one_line


@dataclass(frozen=True)
class SecuredClient:
    """What a client of a `sasl_ssl` cluster needs, as files."""

    ca_file: Path
    username_file: Path
    password_file: Path
    properties: Path  # for `--command-config`: security.protocol, sasl.jaas.config …
    mechanism: str = "SCRAM-SHA-512"

    def security(self) -> KafkaSecurity:
        return KafkaSecurity(
            protocol="SASL_SSL",
            ssl_ca_file=self.ca_file,
            sasl_mechanism=self.mechanism,
            sasl_username_file=self.username_file,
            sasl_password_file=self.password_file,
        )

    def env(self) -> dict[str, str]:
        """The same as FLYT_KAFKA_* variables, for a worker process."""
        return {
            "FLYT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FLYT_KAFKA_SSL_CA_FILE": str(self.ca_file),
            "FLYT_KAFKA_SASL_MECHANISM": self.mechanism,
            "FLYT_KAFKA_SASL_USERNAME_FILE": str(self.username_file),
            "FLYT_KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
        }


CLIENT_USER = "flyt-worker"
_BROKER_USER = "broker"  # the brokers' own user on their SASL_SSL listener
_SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required"


@dataclass(frozen=True)
class Secrets:
    folder: Path
    broker_password: str
    client_password: str
    client: SecuredClient

    def broker_config(self, port: int, cport: int) -> dict[str, object]:
        keystore, ca = self.folder / "broker.pem", self.folder / "ca.pem"
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            # Each mechanism the listener offers needs its server-side login (the user the
            # brokers themselves use between them).
            **{
                f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config": (
                    f'{_SCRAM_JAAS} username="{_BROKER_USER}" password="{self.broker_password}";'
                )
                for m in ("SCRAM-SHA-512", "SCRAM-SHA-256")
            },
            # PEM stores (Kafka 2.7+): the key and certificate in one file, the CA in another.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": keystore,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": ca,
        }

    def add_scram(self) -> list[str]:
        users = ((_BROKER_USER, self.broker_password), (CLIENT_USER, self.client_password))
        return [
            arg
            for name, password in users
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256")
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]


def make_secrets(folder: Path) -> Secrets:
    """A throw-away CA, a broker certificate for 127.0.0.1 and localhost signed by it, and
    random SCRAM passwords; every file 0600 in a 0700 folder."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise KafkaUnavailable(
            "openssl not found: a SASL_SSL cluster makes its certificates with it"
        )
    folder.mkdir(mode=0o700)
    old = os.umask(0o077)
    try:
        (folder / "broker.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        steps = [
            ["req", "-x509", "-newkey", "rsa:2048", "-noenc", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=flyt-kafka-test-ca"],
            ["req", "-newkey", "rsa:2048", "-noenc", "-keyout", "broker.key", "-out",
             "broker.csr", "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "broker.crt", "-days", "2", "-extfile", "broker.ext"],
        ]  # fmt: skip
        for step in steps:
            done = subprocess.run(
                [openssl, *step], cwd=folder, capture_output=True, text=True, timeout=60
            )
            if done.returncode != 0:
                said = one_line(done.stderr.splitlines()[-3:])
                raise KafkaUnavailable(f"openssl {step[0]} failed: {said}")
        pem = (folder / "broker.key").read_text() + (folder / "broker.crt").read_text()
        (folder / "broker.pem").write_text(pem)
        client_password = secrets.token_hex(16)
        (folder / "username").write_text(CLIENT_USER + "\n")
        (folder / "password").write_text(client_password + "\n")
        properties = folder / "client.properties"
        properties.write_text(
            "security.protocol=SASL_SSL\n"
            "sasl.mechanism=SCRAM-SHA-512\n"
            f'sasl.jaas.config={_SCRAM_JAAS} username="{CLIENT_USER}" '
            f'password="{client_password}";\n'
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={folder / 'ca.pem'}\n"
        )
    finally:
        os.umask(old)
    return Secrets(
        folder,
        secrets.token_hex(16),
        client_password,
        SecuredClient(folder / "ca.pem", folder / "username", folder / "password", properties),
    )
