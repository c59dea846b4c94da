"""Kafka plumbing shared by the worker, the simulator and the demo."""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

import faust
from aiokafka.client import ConnectionGroup
from aiokafka.helpers import create_ssl_context
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
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


# librdkafka errors after which waiting longer for the brokers is pointless: every bootstrap
# broker refused the connection, a name does not resolve, TLS or SASL failed.
_UNREACHABLE = (KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError._AUTHENTICATION, KafkaError._SSL,
                KafkaError.SASL_AUTHENTICATION_FAILED)  # fmt: skip
_CAUSES = (KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._AUTHENTICATION, KafkaError._SSL,
           KafkaError.SASL_AUTHENTICATION_FAILED)  # fmt: skip


class KafkaUnreachable(DriftstreamError):
    """No Kafka broker answered at the configured address."""


def check_kafka(settings: Settings, timeout: float = 10.0) -> None:
    """Raise :class:`KafkaUnreachable`, in one line naming the setting and what to do, unless a
    broker answers a metadata request within ``timeout`` seconds. Returns as soon as one does,
    and fails as soon as librdkafka reports every bootstrap broker down (a closed port: at once)."""
    errors: list[KafkaError] = []
    config: dict[str, Any] = {**settings.confluent_config(), "error_cb": errors.append}
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            last = exc
        admin.poll(0)  # serves error_cb
        if any(error.code() in _UNREACHABLE for error in errors) or time.monotonic() >= deadline:
            break
    cause = next((error for error in errors if error.code() in _CAUSES), None)
    if cause is not None:
        reason = cause.str()
    elif isinstance(last, KafkaException) and last.args and isinstance(last.args[0], KafkaError):
        reason = last.args[0].str()
    else:
        reason = f"no answer within {timeout:g} s"
    raise KafkaUnreachable(unreachable_message(settings, reason))


def unreachable_message(settings: Settings, reason: str) -> str:
    """``cannot reach Kafka at HOST (DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS): REASON; what to do``."""
    # librdkafka says "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms
    # in state CONNECT)": keep what failed and why.
    reason = reason.split("/bootstrap: ", 1)[-1].split(" (after ", 1)[0]
    advice = "start the broker there or point DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS at a running one"
    lowered = reason.lower()
    if "ssl" in lowered or "certificate" in lowered:
        advice = "check DRIFTSTREAM_KAFKA_SECURITY_PROTOCOL and DRIFTSTREAM_KAFKA_SSL_* against the broker's listener"
    elif "sasl" in lowered or "authentication" in lowered:
        advice = "check DRIFTSTREAM_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD"
    return (f"cannot reach Kafka at {settings.kafka_bootstrap_servers} (DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS): "
            f"{reason}; {advice}")  # fmt: skip


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create the app's topics that do not exist yet (never alters existing ones)."""
    admin = AdminClient(settings.confluent_config())
    wanted = [
        settings.topic_events, settings.topic_labels, settings.topic_alerts,
        settings.topic_metrics, settings.topic_dlq, settings.topic_retrain,
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


def offsets_since(settings: Settings, topics: list[str], seconds: float) -> dict[str, dict[str, int]]:
    """Per topic and partition, where records of timestamp ``seconds`` or later begin (Kafka's
    ListOffsets by time; a broker may answer with the start of the record batch holding the first,
    so a few records before it may come along); a partition with none yet gives its end. Blocking."""
    consumer = Consumer({**settings.confluent_config(), "group.id": settings.app_id, "enable.auto.commit": False})
    try:
        found: dict[str, dict[str, int]] = {}
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=5).topics[topic]
            if metadata.error is not None:
                raise DriftstreamError(f"cannot read the partitions of {topic}: {metadata.error}")
            wanted = [TopicPartition(topic, p, round(seconds * 1000)) for p in sorted(metadata.partitions)]
            offsets = {}
            for tp in consumer.offsets_for_times(wanted, timeout=5):
                if tp.error is not None:
                    raise DriftstreamError(f"cannot look up {topic}[{tp.partition}] by time: {tp.error}")
                offset = tp.offset
                if offset < 0:  # nothing at or after that time: where the next record will be
                    offset = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=5)[1]
                offsets[str(tp.partition)] = offset
            found[topic] = offsets
        return found
    finally:
        consumer.close()


def end_offsets(settings: Settings, topic: str, partitions: list[int]) -> dict[int, int]:
    """Each partition's end: the offset its next record will have. Blocking."""
    consumer = Consumer({**settings.confluent_config(), "group.id": settings.app_id, "enable.auto.commit": False})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


# Seconds with no further record after which a read that stopped short of an offset is taken
# to have reached the end of the log (fetches wait at most 0.1 s for data, see log_holds).
LOG_END_QUIET = 1.0


def log_holds(
    settings: Settings, topic: str, records: dict[int, tuple[int, int]], timeout: float = 5.0
) -> dict[int, bool | None]:
    """Per partition: does the log still hold the record at ``offset`` with ``timestamp`` (ms)?

    ``records`` maps partition to (offset, timestamp). True: it does. False: the log
    restarted: another record is at that offset, or a read shows the log ends before it.
    None: cannot tell (retention removed the record, or nothing conclusive was read within
    ``timeout`` seconds). Blocking: ``timeout`` plus one watermark request per partition.

    The broker's watermarks only choose where to read, they never answer alone: some
    brokers report a high watermark short of the last record (the Tansu test broker gives
    the last batch's first offset plus one: seen 20002 with offsets up to 20004 readable).
    Right after a partition's first checkpoint and before its first commit, the checkpoint
    ends on the last record read, often in that last batch: trusting the watermark there
    would take an intact log for a restarted one, and apply it all a second time.
    """
    consumer = Consumer({**settings.confluent_config(), "group.id": f"{settings.app_id}-probe",
                         "enable.auto.commit": False, "auto.offset.reset": "error",
                         "fetch.wait.max.ms": 100})  # fmt: skip
    answers: dict[int, bool | None] = {}
    try:
        starts: dict[int, int] = {}
        empty: set[int] = set()  # partitions whose watermarks say they hold nothing
        for partition, (offset, _) in records.items():
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            if offset < low:
                answers[partition] = None  # retention removed it: which log it was is unknowable
            elif offset < high:
                starts[partition] = offset  # the broker admits to the record: read it
            else:
                # Read from the last record the broker admits to on, to what is really there.
                starts[partition] = max(low, high - 1)
                if high <= low:
                    empty.add(partition)
        if starts:
            consumer.assign([TopicPartition(topic, p, start) for p, start in starts.items()])
        began = time.monotonic()
        heard: dict[int, float] = {}  # when each partition last gave a record short of its offset
        pending = set(starts)
        while pending and time.monotonic() - began < timeout:
            message = consumer.poll(0.1)
            now = time.monotonic()
            got = message.partition() if message is not None and message.error() is None else None
            position = message.offset() if message is not None else None
            if got is not None and position is not None and got in pending:
                assert message is not None
                offset, timestamp = records[got]
                if position >= offset:
                    answers[got] = position == offset and message.timestamp()[1] == timestamp
                    pending.discard(got)
                else:
                    heard[got] = now
            for partition in list(pending):
                # The log ends before the offset: the read stopped short of it and nothing more
                # came, or the watermarks said empty and a read found nothing either.
                since = heard.get(partition, began if partition in empty else None)
                if since is not None and now - since >= LOG_END_QUIET:
                    answers[partition] = False
                    pending.discard(partition)
        return {p: answers.get(p) for p in records}
    finally:
        consumer.close()
