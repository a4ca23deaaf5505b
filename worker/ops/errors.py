"""What an operator command can run into, as one line the operator can act on."""

from __future__ import annotations


class BrokerUnavailable(Exception):
    """The broker cannot be reached or does not answer; the message says which.

    `sent` lists what a `send` had already delivered when it failed."""

    def __init__(self, message: str, sent: list[str] | None = None) -> None:
        super().__init__(message)
        self.sent = sent or []


class TopicMissing(Exception):
    """A topic the command needs does not exist on the broker."""

    def __init__(self, topics: list[str], bootstrap: object) -> None:
        self.topics = topics
        names = ", ".join(topics)
        super().__init__(
            f"no topic {names} on {bootstrap}. Check the name: the FLYT_TOPIC_* settings or "
            "--topic (a demo run on an external broker names its topics in its summary, "
            "under 'topics')"
        )
