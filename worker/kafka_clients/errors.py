"""What goes wrong connecting to Kafka: a setting that cannot work, a broker that refuses
this process, no broker answering. A message names the setting or file, never a secret."""

from __future__ import annotations


class KafkaSettingsError(ValueError):
    """A connection setting that cannot work (a missing or unreadable file, an unknown
    protocol): restarting cannot cure it. Names the setting or file, never a secret."""


class KafkaRefused(KafkaSettingsError):
    """The broker answered and refused this process: its certificate is not one the CA
    vouches for, or the SASL user or password is wrong. Restarting cannot cure it."""


class KafkaUnreachable(ConnectionError):
    """No broker at the bootstrap address answered (it may be starting: a restart may cure it)."""
