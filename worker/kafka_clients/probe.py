"""The connection check and the broker's facts (aiokafka, for the worker): connect as
every client will (TLS, SASL), and say at once whether a restart can cure a failure."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker import logs
from worker.kafka_clients.client_args import client_args
from worker.kafka_clients.connection import Bootstrap, KafkaConnection, connection
from worker.kafka_clients.errors import KafkaRefused, KafkaUnreachable

if TYPE_CHECKING:
    from aiokafka.conn import AIOKafkaConnection


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
