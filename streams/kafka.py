"""Kafka plumbing shared by the worker, the simulator and the demo."""

from __future__ import annotations

import logging
import ssl

import faust
from aiokafka.helpers import create_ssl_context
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams import DriftstreamError
from streams.settings import Settings

log = logging.getLogger(__name__)


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust/aiokafka credentials for the configured security protocol."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if protocol.endswith("SSL"):
        context = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    if protocol == "SSL":
        assert context is not None
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create the app's topics that do not exist yet (never alters existing ones)."""
    admin = AdminClient(settings.confluent_config())
    wanted = [
        settings.topic_events, settings.topic_labels, settings.topic_alerts,
        settings.topic_metrics, settings.topic_dlq,
    ]  # fmt: skip
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise DriftstreamError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}"
        ) from exc
    missing = [name for name in wanted if name not in existing]
    if not missing:
        return
    futures = admin.create_topics(
        [NewTopic(name, settings.topic_partitions, settings.topic_replication) for name in missing],
        operation_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout)
            log.info("created topic %s (%d partitions)", name, settings.topic_partitions)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise DriftstreamError(f"cannot create topic {name}: {exc}") from exc


def group_positions(settings: Settings, topic: str, partitions: list[int]) -> dict[int, tuple[int | None, int]]:
    """Per partition: the offset the worker group committed (None if it has none) and the log end.

    Blocking (librdkafka); reads only, without joining the group.
    """
    consumer = Consumer({**settings.confluent_config(), "group.id": settings.app_id, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {
            tp.partition: (tp.offset if tp.offset >= 0 else None,
                           consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[1])
            for tp in committed
        }  # fmt: skip
    finally:
        consumer.close()
