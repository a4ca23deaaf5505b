"""The one place Kafka clients get their connection settings (`worker/kafka_clients/`):
a client properties file as Kafka's tools take it (`--command-config`), the arguments
both client libraries take, and secrets that never show."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from worker.config import KafkaSecurity
from worker.kafka_clients.client_args import client_args, credentials, ssl_context
from worker.kafka_clients.command_config import from_properties
from worker.kafka_clients.connection import KafkaConnection
from worker.kafka_clients.errors import KafkaSettingsError

PASSWORD = "s3cret-Pa55word-never-shown"


def write(path: Path, text: str) -> Path:
    path.write_text(text, "utf-8")
    return path


def test_a_plain_address_is_a_plaintext_connection() -> None:
    assert client_args("127.0.0.1:9092") == {"bootstrap_servers": "127.0.0.1:9092"}
    assert str(KafkaConnection("b1:9093,b2:9093")) == "b1:9093,b2:9093"


def test_command_config_as_kafka_tools_take_it(tmp_path: Path) -> None:
    props = write(
        tmp_path / "client.properties",
        "# a comment\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        f'    username="flyt-worker" password="{PASSWORD}";\n'
        f"ssl.truststore.location={tmp_path / 'ca.pem'}\n"
        "ssl.truststore.type=PEM\n"
        "client.id=ops\n"
        "linger.ms=5\n",
    )
    warned: list[str] = []
    security = from_properties(props, warn=warned.append)
    assert security.protocol == "SASL_SSL"
    assert security.sasl_mechanism == "SCRAM-SHA-512"
    assert security.ssl_ca_file == tmp_path / "ca.pem"
    assert security.sasl_jaas_file == props
    assert credentials(security) == ("flyt-worker", PASSWORD)
    assert warned == [f"--command-config {props}: linger.ms is not used by this tool (ignored)"]
    # Only the file's path is kept: the settings never hold the password.
    assert PASSWORD not in repr(security)


def test_command_config_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    jks = write(
        tmp_path / "jks.properties",
        "security.protocol=SSL\nssl.truststore.location=/x.jks\nssl.truststore.type=JKS\n",
    )
    with pytest.raises(KafkaSettingsError, match=r"ssl.truststore.type=JKS is not read here"):
        from_properties(jks)
    gssapi = write(tmp_path / "k.properties", "security.protocol=SASL_SSL\n")
    with pytest.raises(KafkaSettingsError, match=r"sasl.mechanism=GSSAPI is not supported"):
        from_properties(gssapi)
    no_password = write(
        tmp_path / "np.properties",
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="u";\n',
    )
    with pytest.raises(KafkaSettingsError, match='no username="…" and password'):
        from_properties(no_password)


def test_sasl_settings_read_the_password_from_its_file_and_never_show_it(tmp_path: Path) -> None:
    user = write(tmp_path / "username", "flyt-worker\n")
    password = write(tmp_path / "password", PASSWORD + "\n")
    security = KafkaSecurity(
        protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username_file=user,
        sasl_password_file=password,
    )
    args = client_args(KafkaConnection("127.0.0.1:9092", security))
    assert args["security_protocol"] == "SASL_PLAINTEXT"
    assert args["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (args["sasl_plain_username"], args["sasl_plain_password"]) == ("flyt-worker", PASSWORD)
    assert "ssl_context" not in args
    from worker import logs

    assert PASSWORD not in logs.mask(f"connecting with {PASSWORD}")


def test_missing_and_empty_secret_files_are_errors_that_name_the_file(tmp_path: Path) -> None:
    security = KafkaSecurity(
        protocol="SASL_SSL",
        sasl_username_file=write(tmp_path / "username", "u"),
        sasl_password_file=tmp_path / "password",
    )
    with pytest.raises(KafkaSettingsError, match=r"FLYT_KAFKA_SASL_PASSWORD_FILE .* does not"):
        credentials(security)
    write(tmp_path / "password", "\n")
    with pytest.raises(KafkaSettingsError, match="password is empty"):
        credentials(security)


def test_sasl_without_credentials_says_what_to_set() -> None:
    with pytest.raises(KafkaSettingsError, match="FLYT_KAFKA_SASL_PASSWORD_FILE"):
        client_args(KafkaConnection("b:9093", KafkaSecurity(protocol="SASL_SSL")))


def test_tls_context_checks_the_broker_against_the_ca_and_its_name(tmp_path: Path) -> None:
    context = ssl_context(KafkaSecurity(protocol="SSL"))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    not_pem = write(tmp_path / "ca.pem", "not a certificate")
    with pytest.raises(KafkaSettingsError, match="holds no PEM certificate"):
        ssl_context(KafkaSecurity(protocol="SSL", ssl_ca_file=not_pem))


def test_the_kafka_settings_and_a_lower_case_log_level_are_read_from_the_environment(
    tmp_path: Path,
) -> None:
    from worker.config import from_env

    s = from_env(
        {
            "FLYT_LOG_LEVEL": "debug",
            "FLYT_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "FLYT_KAFKA_SSL_CA_FILE": str(tmp_path / "ca.pem"),
            "FLYT_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
            "FLYT_KAFKA_SSL_CHECK_HOSTNAME": "false",
        }
    )
    assert s.log_level == "DEBUG"
    assert s.kafka.protocol == "SASL_SSL" and s.kafka.ssl_ca_file == tmp_path / "ca.pem"
    assert s.kafka.sasl_password_file == tmp_path / "password"
    assert s.kafka.ssl_check_hostname is False
