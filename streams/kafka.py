"""Kafka plumbing shared by the worker, the simulator and the demo."""

from __future__ import annotations

import logging
import ssl
import time

import faust
from aiokafka.client import ConnectionGroup
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


def broker_connected(app: faust.App) -> bool:
    """Whether the worker's consumer is in touch with Kafka: it knows its group's coordinator
    and its connection to that broker is open.

    aiokafka forgets the coordinator (``coordinator_id`` None) when a request to it fails,
    and a heartbeat goes every ``broker_heartbeat_interval``; it sets it again only after a
    broker answered the lookup and a connection to the coordinator was made. A connection
    reports a closed socket at once. Both are read from memory, without a request, so
    /healthz may be asked as often as a prober likes.
    """
    # Faust's consumer runs aiokafka's in a thread of its own; neither exposes the group
    # coordinator or its connection, so this is the one place that reaches inside them:
    # faust Consumer._thread._consumer (AIOKafkaConsumer) -> _coordinator, _client._conns.
    # Plain attribute reads from this thread, no call into the consumer's event loop.
    consumer = getattr(getattr(app.consumer, "_thread", None), "_consumer", None)
    coordinator = getattr(consumer, "_coordinator", None)
    node = getattr(coordinator, "coordinator_id", None)
    if consumer is None or node is None:
        return False
    connection = consumer._client._conns.get((node, ConnectionGroup.COORDINATION))
    return connection is not None and connection.connected()


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


def committed_offsets(settings: Settings, topic: str, partitions: list[int]) -> dict[int, int | None]:
    """The offset the worker group committed on each partition (None: none). Blocking; does not join."""
    consumer = Consumer({**settings.confluent_config(), "group.id": settings.app_id, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in committed}
    finally:
        consumer.close()


def log_holds(
    settings: Settings, topic: str, records: dict[int, tuple[int, int]], timeout: float = 3.0
) -> dict[int, bool | None]:
    """Per partition: does the log still hold the record at ``offset`` with ``timestamp`` (ms)?

    ``records`` maps partition to (offset, timestamp). True: it does; False: the log ends
    before that offset or holds another record there (the log restarted); None: cannot
    tell (retention removed it). Blocking.
    """
    consumer = Consumer({**settings.confluent_config(), "group.id": f"{settings.app_id}-probe",
                         "enable.auto.commit": False, "auto.offset.reset": "error"})  # fmt: skip
    answers: dict[int, bool] = {}
    try:
        consumer.assign([TopicPartition(topic, p, offset) for p, (offset, _) in records.items()])
        deadline = time.monotonic() + timeout
        while len(answers) < len(records) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None and message.partition() not in answers:
                offset, timestamp = records[message.partition()]
                answers[message.partition()] = message.offset() == offset and message.timestamp()[1] == timestamp
        # No record came back: a log that ends at or before the offset restarted; one that
        # goes past it but cannot serve it lost the record to retention.
        for partition, (offset, _) in records.items():
            if partition not in answers:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
                if high <= offset:
                    answers[partition] = False
        return {p: answers.get(p) for p in records}
    finally:
        consumer.close()
