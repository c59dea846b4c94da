"""``driftstream alerts``: follow the alert topic where the user is, a terminal or a script.

The topic's partitions are assigned, not subscribed: a consumer group that joins waits
for a rebalance (20 s on the test broker) before its first message, while an assigned
consumer reads at once. Nothing is committed: every run starts at the end of the topic,
or with ``from_beginning`` at its start.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition
from rich.console import Console

from streams import DriftstreamError
from streams.console import format_alert
from streams.settings import Settings

SEVERITIES = ("warning", "critical")


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to show: of these models and types (empty: all), at or above ``severity``."""

    models: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    severity: str = "warning"
    firing_only: bool = False

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be warning or critical, got {self.severity!r}")

    def accepts(self, alert: dict[str, Any]) -> bool:
        if self.models and alert.get("model") not in self.models:
            return False
        if self.types and alert.get("type") not in self.types:
            return False
        if self.firing_only and alert.get("status") != "firing":
            return False
        severity = alert.get("severity")
        return severity in SEVERITIES and SEVERITIES.index(severity) >= SEVERITIES.index(self.severity)


def follow(
    settings: Settings,
    wanted: AlertFilter,
    from_beginning: bool = False,
    as_json: bool = False,
    count: int = 0,
    out: TextIO | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Print the alerts ``wanted`` accepts as they arrive, until ``count`` were shown (0: until
    interrupted); how many were shown. ``DriftstreamError`` when Kafka or the topic cannot be read."""
    out = out or sys.stdout
    console = Console(file=out, highlight=False, soft_wrap=True)
    topic = settings.topic_alerts
    consumer = Consumer({
        **settings.confluent_config(),
        "group.id": f"driftstream-alerts-{uuid.uuid4().hex[:8]}",  # never joined: offsets are assigned
        "enable.auto.commit": False,
        "log_level": 0,  # the client's own connection errors would drown the one line this says
    })  # fmt: skip
    shown = 0
    try:
        consumer.assign(_partitions(consumer, settings, OFFSET_BEGINNING if from_beginning else OFFSET_END))
        while not (should_stop and should_stop()) and (count <= 0 or shown < count):
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise DriftstreamError(f"reading {topic} failed: {message.error()}")
            try:
                alert = orjson.loads(message.value() or b"")
            except orjson.JSONDecodeError:
                alert = None
            if not isinstance(alert, dict) or not isinstance(alert.get("message"), str):
                print(f"skipped {topic}[{message.partition()}] offset {message.offset()}: not an alert",
                      file=sys.stderr)  # fmt: skip
                continue
            if not wanted.accepts(alert):
                continue
            if as_json:
                out.write(orjson.dumps(alert).decode() + "\n")
                out.flush()
            else:
                console.print(f"{str(alert.get('detected_at', ''))[11:19]} " + format_alert(alert))
            shown += 1
    finally:
        consumer.close()
    return shown


def _partitions(consumer: Consumer, settings: Settings, offset: int) -> list[TopicPartition]:
    topic = settings.topic_alerts
    try:
        metadata = consumer.list_topics(topic, timeout=5)
    except KafkaException as exc:
        raise DriftstreamError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers} "
                               f"(DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS): {exc.args[0].str()}") from exc  # fmt: skip
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise DriftstreamError(f"the alert topic {topic!r} (DRIFTSTREAM_TOPIC_ALERTS) does not exist on Kafka at "
                               f"{settings.kafka_bootstrap_servers}: start a worker first, or name the topic")
    return [TopicPartition(topic, partition, offset) for partition in sorted(found.partitions)]
