"""``driftstream replay``: the worker's engine over a past range of the input topics.

A user tries new settings on last week's traffic before deploying them. The records come
from a plain confluent-kafka consumer (partitions assigned, no group joined, nothing
committed) in batches of thousands, go through the same ``Engine.process`` as the worker's,
and are checkpointed as the worker does, but under a state prefix of their own: the live
worker's Redis keys are never read or written, except the models' baselines, which are read.

What the worker would publish goes elsewhere: alerts to a topic the user names (never the
live one) or to a callback (the command prints them), retraining requests to a callback
only, rejected messages are counted, never sent to the DLQ, drift statistics are dropped.

The engine's clock is the replayed records' time (the latest Kafka timestamp read), so
alerts carry the time they would have been detected and the retrain cooldown counts
replayed time. Freshness (silence) is not judged: a replay has no live clock to be silent in.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from streams import DriftstreamError
from streams.decode import Invalid, parse_timestamp
from streams.engine import Engine, Outputs, Record
from streams.kafka import offsets_since, unreachable_message
from streams.metrics import Metrics
from streams.redis_client import REDIS_ERRORS, redis_problem
from streams.settings import Settings
from streams.state import MemoryStateStore, RedisStateStore, StateStore, StoreUnavailable

log = logging.getLogger(__name__)

CONSUME_MESSAGES = 2000  # messages asked of one consume() call at most
CONSUME_BYTES = 32 * 1024 * 1024  # and about this many bytes of them (1000-event envelopes: ~80 messages)
BATCH_BYTES = 8 * 1024 * 1024  # message values handed to one Engine.process call (1000-event envelopes: ~20)
BATCH_MESSAGES = 5000
CHECKPOINT_SECONDS = 5.0  # at least; longer when a checkpoint takes more than a tenth of that
# A partition that gives neither a record nor an end-of-partition for this long is taken to have
# ended (an offset past its end, which some brokers answer with silence).
QUIET_SECONDS = 10.0
STALL_SECONDS = 60.0  # silence of a partition whose log holds more: Kafka is down or stalled, the replay fails
HELD_BYTES = 16 * 1024 * 1024  # label messages held for the events to catch up, per partition, before it pauses
LABEL_RETRY_SECONDS = 0.25  # waiting labels are looked up this often at most (the worker: LABEL_RETRY_INTERVAL)
ALERT_FEED_PARTITION = 0  # the replay's own alerts, read back by the retrain policy, as one partition

Existing = Literal["refuse", "fresh", "resume"]


class ReplayError(DriftstreamError):
    """A replay that cannot start or go on; the message is one line naming the cause."""


@dataclass(frozen=True)
class OffsetBound:
    """One end of an offset range: ``every`` partition's, and per ``(topic, partition)`` exceptions."""

    every: int | None = None
    partitions: dict[tuple[str, int], int] = field(default_factory=dict)

    @classmethod
    def parse(cls, option: str, values: Sequence[str]) -> OffsetBound | None:
        """``N`` (every partition) and ``TOPIC:PARTITION=N`` items (repeatable); None when none given."""
        if not values:
            return None
        every: int | None = None
        partitions: dict[tuple[str, int], int] = {}
        for text in values:
            where, equals, number = text.rpartition("=")
            topic, colon, partition = where.rpartition(":")
            try:
                offset = int(number)
                if equals and not (colon and topic):
                    raise ValueError
                key = (topic, int(partition)) if equals else None
            except ValueError:
                raise ReplayError(f"{option} {text!r}: give an offset N or TOPIC:PARTITION=N") from None
            if offset < 0:
                raise ReplayError(f"{option} {text!r}: an offset is >= 0")
            if key is None:
                if every is not None:
                    raise ReplayError(f"{option} gives the offset of every partition twice")
                every = offset
            elif key in partitions:
                raise ReplayError(f"{option} gives {key[0]}:{key[1]} twice")
            else:
                partitions[key] = offset
        return cls(every, partitions)

    def of(self, topic: str, partition: int) -> int | None:
        return self.partitions.get((topic, partition), self.every)


def parse_time(option: str, text: str) -> float:
    """``--from``/``--to``: RFC 3339 (no zone: UTC) or Unix seconds."""
    try:
        value: Any = float(text)
    except ValueError:
        value = text
    try:
        seconds = parse_timestamp(value)
    except Invalid as exc:
        raise ReplayError(f"{option} {text!r}: {exc.detail} (give RFC 3339, e.g. 2026-12-01T00:00:00Z, "
                          f"or Unix seconds)") from None  # fmt: skip
    assert seconds is not None
    return seconds


@dataclass(frozen=True)
class ReplayRange:
    """What to replay: a start (a time or offsets; default the start of the log) and an end (a time,
    offsets, or by default the end of the log when the replay starts), both inclusive."""

    since: float | None = None  # Unix seconds: records from the first of this Kafka timestamp or later
    until: float | None = None  # Unix seconds: a record stamped later ends its partition
    from_offsets: OffsetBound | None = None
    to_offsets: OffsetBound | None = None  # the last offset replayed

    def __post_init__(self) -> None:
        if self.since is not None and self.from_offsets is not None:
            raise ReplayError("give the start as --from or as --from-offset, not both")
        if self.until is not None and self.to_offsets is not None:
            raise ReplayError("give the end as --to or as --to-offset, not both")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ReplayError("--from is after --to: the range is empty")
        start = self.from_offsets.every if self.from_offsets else None
        end = self.to_offsets.every if self.to_offsets else None
        if start is not None and end is not None and start > end:
            raise ReplayError(f"--from-offset {start} is past --to-offset {end}: the range is empty")


@dataclass
class ReplaySummary:
    """What a replay did."""

    events: int = 0  # events applied to the monitors
    messages: int = 0  # messages read from the events topic(s)
    label_messages: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # per reason: what the worker sends to its DLQ
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)  # per (type, status)
    requests: int = 0  # retraining requests (never published)
    labels: Counter[str] = field(default_factory=Counter)  # per outcome: joined, waiting, unmatched, ...
    elapsed: float = 0.0  # seconds
    state_prefix: str | None = None  # None: in memory
    partitions: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # first, last offset read

    @property
    def events_per_second(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    def lines(self) -> list[str]:
        """The summary as a person reads it."""
        read = ", ".join(f"{topic}[{partition}] {first}..{last}"
                         for (topic, partition), (first, last) in sorted(self.partitions.items()))  # fmt: skip
        where = "memory" if self.state_prefix is None else f"Redis prefix {self.state_prefix!r}"
        lines = [
            f"replayed {self.events:,} events ({self.messages:,} messages, {self.label_messages:,} label messages) "
            f"in {self.elapsed:.1f} s: {self.events_per_second:,.0f} events/s; state in {where}",
            f"read: {read or 'nothing in range'}",
            f"rejected: {sum(self.rejected.values()):,}"
            + (f" ({', '.join(f'{reason} {n}' for reason, n in sorted(self.rejected.items()))})" if self.rejected
               else ""),
        ]  # fmt: skip
        if self.label_messages or self.labels:
            lines.append("labels: " + (", ".join(f"{outcome} {n:,}" for outcome, n in sorted(self.labels.items()))
                                       or "none"))  # fmt: skip
        by_type: dict[str, list[str]] = {}
        for (kind, status), count in sorted(self.alerts.items()):
            by_type.setdefault(kind, []).append(f"{count} {status}")
        alerts = "; ".join(f"{kind} {', '.join(counts)}" for kind, counts in by_type.items())
        lines.append(f"alerts: {sum(self.alerts.values())}" + (f" ({alerts})" if alerts else ""))
        lines.append(f"retraining requests: {self.requests} (never published)")
        return lines


class ReplayStore(RedisStateStore):
    """Partition state and join data under the replay prefix; baselines read (never written) under the live one."""

    def __init__(self, client: Any, prefix: str, app_id: str, live_prefix: str) -> None:
        super().__init__(client, prefix, app_id)
        self._live = RedisStateStore(client, live_prefix, app_id)

    def baseline_key(self, model: str, version: str | None = None) -> str:
        return self._live.baseline_key(model, version)

    def generation_key(self) -> str:
        return self._live.generation_key()

    async def save_baseline(self, model: str, blob: bytes, version: str | None = None) -> None:
        raise ReplayError("a replay never writes baselines")


class MemoryReplayStore(MemoryStateStore):
    """State in memory; baselines read from the live store when there is one."""

    def __init__(self, baselines: RedisStateStore | None) -> None:
        super().__init__()
        self._live = baselines

    async def load_baseline(self, model: str, version: str | None = None) -> bytes | None:
        return None if self._live is None else await self._live.load_baseline(model, version)

    async def baseline_generation(self) -> int:
        return 0 if self._live is None else await self._live.baseline_generation()

    async def save_baseline(self, model: str, blob: bytes, version: str | None = None) -> None:
        raise ReplayError("a replay never writes baselines")

    async def close(self) -> None:
        if self._live is not None:
            await self._live.close()


def replay(
    settings: Settings,
    span: ReplayRange | None = None,
    *,
    topics: Sequence[str] | None = None,
    state_prefix: str | None = None,
    memory: bool = False,
    existing: Existing = "refuse",
    alerts_topic: str | None = None,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
    on_request: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Replay ``span`` of ``topics`` (default: the events topic, and the labels topic when label joining
    is on and it exists) through the engine with ``settings``; blocks until the end of the range.

    State goes under ``state_prefix`` (default ``<STATE_PREFIX>-replay``, never the live one) or, with
    ``memory``, stays in this process. A prefix that already holds state is refused unless ``existing``
    is ``fresh`` (delete it first) or ``resume`` (go on from it: what it covers is skipped). Alerts go to
    ``alerts_topic`` (never the live alert topic) when given, and to ``on_alert``; retraining requests
    to ``on_request``. ``progress`` gets the events replayed so far after each batch.
    Raises ``ReplayError`` (one line) for bad options, Kafka or Redis failures.
    """
    run = Replay(settings, span or ReplayRange(), topics, state_prefix, memory, existing, alerts_topic, on_alert,
                 on_request, progress)  # fmt: skip
    return asyncio.run(run.run())


class Replay:
    """One replay run (``replay`` is its entry point)."""

    def __init__(
        self,
        settings: Settings,
        span: ReplayRange,
        topics: Sequence[str] | None,
        state_prefix: str | None,
        memory: bool,
        existing: Existing,
        alerts_topic: str | None,
        on_alert: Callable[[dict[str, Any]], None] | None,
        on_request: Callable[[dict[str, Any]], None] | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.live = settings
        self.span = span
        self.topics = list(dict.fromkeys(topics)) if topics else None
        self.memory = memory or settings.state_backend == "memory"
        prefix = state_prefix if state_prefix is not None else f"{settings.state_prefix}-replay"
        if not prefix.strip():
            raise ReplayError("--state-prefix must not be empty")
        if prefix == settings.state_prefix and not self.memory:
            raise ReplayError(f"--state-prefix {prefix!r} is the live worker's (DRIFTSTREAM_STATE_PREFIX): a "
                              f"replay never touches its state; name another")  # fmt: skip
        self.prefix = prefix
        self.settings = settings.model_copy(update={"state_prefix": prefix})
        self.existing = existing
        if alerts_topic is not None:
            outputs = {
                settings.topic_alerts: "the live alert topic (DRIFTSTREAM_TOPIC_ALERTS)",
                settings.topic_dlq: "the live DLQ", settings.topic_metrics: "the live metrics topic",
                settings.topic_retrain: "the live retrain topic", settings.topic_events: "the events topic",
                settings.topic_labels: "the labels topic",
            }  # fmt: skip
            if alerts_topic in outputs or (self.topics and alerts_topic in self.topics):
                what = outputs.get(alerts_topic, "a replayed topic")
                raise ReplayError(f"--alerts-topic {alerts_topic!r} is {what}; a replay sends its alerts to a "
                                  f"topic of their own")  # fmt: skip
            if not alerts_topic.strip():
                raise ReplayError("--alerts-topic must not be empty")
        self.alerts_topic = alerts_topic
        self.on_alert = on_alert
        self.on_request = on_request
        self.progress = progress
        self.summary = ReplaySummary(state_prefix=None if self.memory else prefix)
        self.now = 0.0  # the engine's clock: the latest Kafka timestamp read (Unix seconds)
        self.metrics = Metrics(CollectorRegistry())
        self.delivery_errors: list[str] = []
        self.feed_offset = 0  # next offset of the replay's own alerts, as the retrain policy reads them

    # -- setup ------------------------------------------------------------------

    def _consumer(self) -> Consumer:
        s = self.live
        return Consumer({
            **s.confluent_config(),
            "group.id": f"{s.app_id}-replay-{uuid.uuid4().hex[:8]}",  # never joined: partitions are assigned
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "error",  # an offset out of range is reported, not silently moved
            "queued.max.messages.kbytes": 32768,
            "fetch.max.bytes": max(52428800, s.max_message_bytes + 65536),
            "log_level": 0,  # errors come back as exceptions and error events, said once
        })  # fmt: skip

    def _partitions(self, consumer: Consumer) -> dict[str, list[int]]:
        """The topics to replay and their partitions; ``ReplayError`` for a missing one."""
        s = self.live
        try:
            metadata = consumer.list_topics(timeout=10)
        except KafkaException as exc:
            raise ReplayError(unreachable_message(s, exc.args[0].str())) from exc
        found = {name: sorted(topic.partitions) for name, topic in metadata.topics.items()
                 if topic.error is None and topic.partitions}  # fmt: skip
        if self.topics is None:
            topics = [s.topic_events]
            if s.label_ttl and s.topic_labels in found:
                topics.append(s.topic_labels)
        else:
            topics = self.topics
        for topic in topics:
            if topic == s.topic_alerts:
                raise ReplayError(f"--topics names the alert topic {topic!r}: a replay reads input topics")
            if topic not in found:
                raise ReplayError(f"topic {topic!r} does not exist on Kafka at {s.kafka_bootstrap_servers}")
        for bound in (self.span.from_offsets, self.span.to_offsets):
            for topic, partition in bound.partitions if bound else ():
                if topic not in topics:
                    raise ReplayError(f"offset given for {topic}:{partition}, but {topic!r} is not replayed "
                                      f"(replayed: {', '.join(topics)})")  # fmt: skip
                if partition not in found[topic]:
                    raise ReplayError(f"offset given for {topic}:{partition}: {topic!r} has partitions "
                                      f"{found[topic][0]}..{found[topic][-1]}")  # fmt: skip
        return {topic: found[topic] for topic in topics}

    def _starts(self, consumer: Consumer, partitions: dict[str, list[int]]) -> dict[tuple[str, int], int]:
        """Where each partition's replay starts: an offset, OFFSET_BEGINNING, or by time (Kafka's ListOffsets)."""
        span = self.span
        starts: dict[tuple[str, int], int] = {}
        for topic, numbers in partitions.items():
            if span.since is not None:
                wanted = [TopicPartition(topic, p, math.ceil(span.since * 1000)) for p in numbers]
                try:
                    answered = consumer.offsets_for_times(wanted, timeout=10)
                except KafkaException as exc:
                    raise ReplayError(f"cannot look up {topic} by time: {exc.args[0].str()}") from exc
                for tp in answered:
                    if tp.error is not None:
                        raise ReplayError(f"cannot look up {topic}[{tp.partition}] by time: {tp.error.str()}")
                    if tp.offset >= 0:  # -1: no record that late, nothing to replay there
                        starts[(topic, tp.partition)] = tp.offset
                continue
            for partition in numbers:
                offset = span.from_offsets.of(topic, partition) if span.from_offsets else None
                starts[(topic, partition)] = OFFSET_BEGINNING if offset is None else offset
        return starts

    async def _open_store(self) -> StateStore:
        s = self.live
        live: RedisStateStore | None = None
        try:
            if s.state_backend == "redis":
                live = RedisStateStore.from_settings(s)
                await live.baseline_generation()  # Redis answers, or the replay does not start
            if self.memory:
                return MemoryReplayStore(live)
            assert live is not None
            store = ReplayStore(live.client, self.prefix, s.app_id, s.state_prefix)
            await self._existing_state(store)
            return store
        except StoreUnavailable as exc:
            if live is not None:
                await live.close()
            advice = " (--memory still reads the models' baselines there; DRIFTSTREAM_STATE_BACKEND=memory " \
                     "replays without them)" if self.memory else ""  # fmt: skip
            raise ReplayError(redis_problem(s, exc.__cause__ or exc) + advice) from exc

    async def _existing_state(self, store: ReplayStore) -> None:
        """Refuse, delete or keep what an earlier replay left under the prefix (``existing``)."""
        client = store.client
        pattern = f"{_glob_escape(self.prefix)}:{_glob_escape(self.live.app_id)}:*"
        if self.existing == "resume":
            return
        try:
            found = 0
            chunk: list[bytes] = []
            async for key in client.scan_iter(match=pattern, count=1000):
                found += 1
                if self.existing == "fresh":
                    chunk.append(key)
                    if len(chunk) >= 1000:
                        await client.unlink(*chunk)  # a cluster client splits it by slot
                        chunk = []
            if chunk:
                await client.unlink(*chunk)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(str(exc)) from exc
        if found and self.existing == "refuse":
            raise ReplayError(f"the replay state prefix {self.prefix!r} holds {found} key(s) of an earlier replay: "
                              f"--fresh deletes them first, --resume goes on from them, or name another "
                              f"--state-prefix")  # fmt: skip
        if found:
            log.info("deleted %d key(s) of an earlier replay under %r", found, self.prefix)

    def _producer(self) -> Producer | None:
        if self.alerts_topic is None:
            return None
        s = self.live
        admin = AdminClient(s.confluent_config())
        try:
            topics = admin.list_topics(timeout=10).topics
        except KafkaException as exc:
            raise ReplayError(unreachable_message(s, exc.args[0].str())) from exc
        if self.alerts_topic not in topics:
            if not s.create_topics:
                raise ReplayError(f"--alerts-topic {self.alerts_topic!r} does not exist (DRIFTSTREAM_CREATE_TOPICS "
                                  f"is off): create it first")  # fmt: skip
            future = admin.create_topics([NewTopic(self.alerts_topic, s.topic_partitions, s.topic_replication)])
            try:
                future[self.alerts_topic].result(30)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise ReplayError(f"cannot create --alerts-topic {self.alerts_topic!r}: {exc}") from exc
        return Producer({**s.confluent_config(), "linger.ms": 20})

    # -- the run ----------------------------------------------------------------

    async def run(self) -> ReplaySummary:
        started = time.perf_counter()
        consumer = self._consumer()
        try:
            partitions = self._partitions(consumer)
            starts = self._starts(consumer, partitions)
            if self.live.topic_labels not in partitions:
                # No label will be read: the join data of the events (a Redis write per event id) is never needed.
                self.settings = self.settings.model_copy(update={"label_ttl": 0.0})
            else:
                # A replay reads hours of labels in seconds: the few that wait must not wait seconds.
                retry = min(self.live.label_retry_interval, LABEL_RETRY_SECONDS)
                self.settings = self.settings.model_copy(update={"label_retry_interval": retry})
            producer = self._producer()
            store = await self._open_store()
            try:
                engine = Engine(self.settings, store, self.metrics, clock=lambda: self.now)
                if self.live.retrain_on:
                    stored = await store.load(self.live.topic_alerts, ALERT_FEED_PARTITION)
                    self.feed_offset = stored.offset + 1 if stored is not None else 0
                try:
                    await self._consume(consumer, engine, producer, starts)
                finally:
                    await engine.close()
            finally:
                await store.close()
        finally:
            consumer.close()
        self.summary.events = self._events()
        for metric in self.metrics.labels.collect():
            for sample in metric.samples:
                # "waiting" is a passing state (most waiting labels join later), not an outcome.
                if sample.name.endswith("_total") and sample.value and sample.labels["outcome"] != "waiting":
                    self.summary.labels[sample.labels["outcome"]] += int(sample.value)
        self.summary.elapsed = time.perf_counter() - started
        return self.summary

    async def _consume(self, consumer: Consumer, engine: Engine, producer: Producer | None,
                       starts: dict[tuple[str, int], int]) -> None:  # fmt: skip
        span = self.span
        since_ms = None if span.since is None else math.ceil(span.since * 1000)
        until_ms = None if span.until is None else math.floor(span.until * 1000)
        pending = set(starts)
        ends: dict[tuple[str, int], float] = {}  # exclusive end offset, known from the first fetch
        reached: set[tuple[str, int]] = set()  # partitions past --from (a broker may answer by batch)
        labels_topic = self.live.topic_labels
        # Label records wait here until every events partition was read up to their time: read from
        # another partition, they would run ahead of the predictions they label (hours ahead, in a
        # replay) and wait for them by the thousand, past LABEL_WAIT_MAX.
        held: dict[tuple[str, int], deque[Record]] = {key: deque() for key in starts if key[0] == labels_topic}
        held_bytes = dict.fromkeys(held, 0)
        paused: set[tuple[str, int]] = set()
        seen_ms: dict[tuple[str, int], int] = {}  # each events partition's latest record time
        horizon = -math.inf  # labels up to this time (ms) may go: every events partition has reached it
        quiet_since = last_checkpoint = time.monotonic()
        interval = CHECKPOINT_SECONDS
        message_bytes = 1024.0  # running mean size of a message: how many one consume() may take
        if pending:
            consumer.assign([TopicPartition(topic, partition, offset) for (topic, partition), offset in starts.items()])

        def finish(key: tuple[str, int]) -> None:
            pending.discard(key)
            paused.discard(key)
            consumer.pause([TopicPartition(*key)])

        while pending or any(held.values()):
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Ctrl-C: asyncio's cancellation may have been swallowed by a Redis call that finished at the
                # same moment (asyncio.wait_for on Python 3.11); the request stays on the task.
                raise asyncio.CancelledError
            messages: list[Message] = []
            if pending:
                wanted = max(1, min(CONSUME_MESSAGES, int(CONSUME_BYTES / message_bytes)))
                messages = await asyncio.to_thread(_consume_ready, consumer, wanted)
            if messages:
                quiet_since = time.monotonic()
            elif pending - paused and time.monotonic() - quiet_since >= QUIET_SECONDS:
                # Silence is the end only where the broker says the log holds nothing more for us: a broker
                # that stalls or is down must not end the range early (and exit 0 with part of it).
                for key in sorted(pending - paused):
                    if await asyncio.to_thread(_at_end, consumer, key, ends.get(key)):
                        log.warning("%s[%d]: no record and no end of partition for %.0f s; taking it as ended",
                                    *key, QUIET_SECONDS)  # fmt: skip
                        finish(key)
                    elif time.monotonic() - quiet_since >= STALL_SECONDS:
                        raise ReplayError(f"Kafka sent nothing of {key[0]}[{key[1]}] for {STALL_SECONDS:.0f} s "
                                          "although its log holds more; the replay state up to its last checkpoint "
                                          "is kept: run again with --resume to go on")  # fmt: skip
            records: list[Record] = []
            for message in messages:
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                error = message.error()
                if error is not None:
                    self._on_error(consumer, (topic, partition), error, starts, pending, finish)
                    continue
                if topic is None or partition is None or offset is None:
                    continue  # every record has them (the client's own stubs allow None)
                key = (topic, partition)
                if key not in pending:
                    continue  # fetched before its partition ended
                if key not in ends:
                    # The end of the log as the first fetch saw it (some brokers' ListOffsets answer short).
                    end = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)[1]
                    last = span.to_offsets.of(topic, partition) if span.to_offsets else None
                    ends[key] = min(math.inf if end < 0 else end, math.inf if last is None else last + 1)
                if offset >= ends[key]:
                    finish(key)
                    continue
                stamp = message.timestamp()[1]
                if until_ms is not None and stamp > until_ms:
                    finish(key)
                    continue
                if since_ms is not None and key not in reached:
                    if stamp < since_ms:
                        continue
                    reached.add(key)
                first, _ = self.summary.partitions.get(key, (offset, offset))
                self.summary.partitions[key] = (first, offset)
                value = message.value()
                message_bytes = 0.9 * message_bytes + 0.1 * len(value or b"")
                record = Record(topic, partition, offset, stamp / 1000, message.key(), value, message.headers())
                if key in held:
                    self.summary.label_messages += 1
                    held[key].append(record)
                    held_bytes[key] += len(value or b"")
                else:
                    self.summary.messages += 1
                    seen_ms[key] = max(seen_ms.get(key, stamp), stamp)
                    records.append(record)
                if offset >= ends[key] - 1:
                    finish(key)
            await self._process(engine, records, producer)
            # Labels released by the horizon of the previous round: the join data of the events they label
            # was stored meanwhile (in the background, while this round was read).
            released: list[Record] = []
            for key, queue in held.items():
                while queue and queue[0].timestamp * 1000 <= horizon:
                    record = queue.popleft()
                    held_bytes[key] -= len(record.value or b"")
                    released.append(record)
            await self._process(engine, released, producer)
            await self._send(engine, await self._outputs(engine.retry_waiting()), producer)
            open_events = [key for key in pending if key[0] != labels_topic]
            horizon = min((seen_ms.get(key, -math.inf) for key in open_events), default=math.inf)
            for key, size in held_bytes.items():  # bound what waits: its partition stops fetching meanwhile
                if key in pending and key not in paused and size >= HELD_BYTES:
                    consumer.pause([TopicPartition(*key)])
                    paused.add(key)
                elif key in paused and size < HELD_BYTES / 2:
                    consumer.resume([TopicPartition(*key)])
                    paused.discard(key)
            if self.progress is not None and (records or released):
                self.progress(self._events())
            if time.monotonic() - last_checkpoint >= interval:
                began = time.monotonic()
                await self._checkpoint(engine, producer)
                last_checkpoint = time.monotonic()
                # Snapshots of big models take a while to encode: at most a tenth of the time goes to them.
                interval = max(CHECKPOINT_SECONDS, 10 * (last_checkpoint - began))
        await self._checkpoint(engine, producer)  # the join data of every event stored, then:
        # labels read before their predictions were stored waited; each is looked up once more now.
        await self._checkpoint(engine, producer, every_waiting_label=True)

    async def _process(self, engine: Engine, records: list[Record], producer: Producer | None) -> None:
        for batch in _batches(records):
            self.now = max(self.now, max(record.timestamp for record in batch))
            await self._send(engine, await self._outputs(engine.process(batch)), producer)

    def _events(self) -> int:
        """Events applied so far (the engine counts them per model)."""
        return int(sum(sample.value for metric in self.metrics.events_consumed.collect()
                       for sample in metric.samples if sample.name.endswith("_total")))  # fmt: skip

    def _on_error(self, consumer: Consumer, where: tuple[str | None, int | None], error: KafkaError,
                  starts: dict[tuple[str, int], int], pending: set[tuple[str, int]],
                  finish: Callable[[tuple[str, int]], None]) -> None:  # fmt: skip
        topic, partition = where
        if topic is None or partition is None:  # the client's, not a partition's
            if error.fatal():
                raise ReplayError(f"reading Kafka failed: {error.str()}")
            log.info("%s (retrying)", error.str())
            return
        key = (topic, partition)
        if error.code() == KafkaError._PARTITION_EOF:
            if key in pending:
                finish(key)  # read up to the end of the log
            return
        if error.code() == KafkaError._AUTO_OFFSET_RESET and key in pending:
            # The start is out of the log: before what retention kept (start at its beginning) or past its end.
            low, high = consumer.get_watermark_offsets(TopicPartition(*key), timeout=10)
            start = starts[key]
            if 0 <= start < low:
                log.warning("%s[%d]: offset %d is no longer retained; replaying from %d", *key, start, low)
                starts[key] = low
                consumer.seek(TopicPartition(topic, partition, low))
            else:
                log.warning("%s[%d]: offset %d is past the end of the log (%d); nothing to replay there", *key,
                            start, high)  # fmt: skip
                finish(key)
            return
        if error.fatal() or not error.retriable():
            raise ReplayError(f"reading {key[0]}[{key[1]}] failed: {error.str()}")
        log.info("%s[%d]: %s (retrying)", *key, error.str())

    async def _outputs(self, work: Awaitable[Outputs]) -> Outputs:
        """The engine's outputs; a Redis failure ends the replay (what was checkpointed stays)."""
        try:
            return await work
        except StoreUnavailable as exc:
            raise ReplayError(f"{redis_problem(self.settings, exc.__cause__ or exc)}; the replay state up to its "
                              f"last checkpoint is kept: run again with --resume to go on") from exc  # fmt: skip

    async def _send(self, engine: Engine, out: Outputs, producer: Producer | None) -> None:
        """Send a batch's outputs where a replay sends them."""
        for reason in out.rejected:
            self.summary.rejected[reason] += 1
        for (key, value), alert in zip(out.alerts, out.alert_objects, strict=True):
            self.summary.alerts[(alert["type"], alert["status"])] += 1
            if producer is not None:
                self._produce(producer, key, value)
            if self.on_alert is not None:
                self.on_alert(alert)
        for _, request, since in out.requests:
            s = self.live
            try:
                lookup = [s.topic_events, s.topic_labels]
                request["since"]["offsets"] = await asyncio.to_thread(offsets_since, s, lookup, since)
            except (DriftstreamError, KafkaException) as exc:
                log.warning("could not look up the offsets of a retraining request's data: %s", exc)
                request["since"]["offsets"] = None
            self.summary.requests += 1
            if self.on_request is not None:
                self.on_request(request)
        if out.alerts and self.live.retrain_on:
            # The worker's retrain policy reads the alert topic back; a replay hands it its own alerts.
            feed = []
            for key, value in out.alerts:
                feed.append(Record(self.live.topic_alerts, ALERT_FEED_PARTITION, self.feed_offset, self.now, key,
                                   value))  # fmt: skip
                self.feed_offset += 1
            await self._send(engine, await self._outputs(engine.process(feed)), producer)

    def _produce(self, producer: Producer, key: bytes, value: bytes) -> None:
        assert self.alerts_topic is not None

        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is not None and not self.delivery_errors:
                self.delivery_errors.append(error.str())

        while True:
            try:
                producer.produce(self.alerts_topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)

    async def _checkpoint(self, engine: Engine, producer: Producer | None, every_waiting_label: bool = False) -> None:
        """As the worker's: what was published is delivered, then the state covering it is saved."""
        await self._send(engine, await self._outputs(engine.retry_waiting(every_waiting_label)), producer)
        if producer is not None:
            left = await asyncio.to_thread(producer.flush, 30)
            if left or self.delivery_errors:
                reason = self.delivery_errors[0] if self.delivery_errors else f"{left} not acknowledged in 30 s"
                raise ReplayError(f"alerts to {self.alerts_topic!r} were not delivered: {reason}")
        try:
            await engine.checkpoint()
        except StoreUnavailable as exc:
            raise ReplayError(f"{redis_problem(self.settings, exc.__cause__ or exc)}; the replay state up to its "
                              f"last checkpoint is kept: run again with --resume to go on") from exc  # fmt: skip


def _at_end(consumer: Consumer, key: tuple[str, int], end: float | None) -> bool:
    """Whether a partition was read up to the end of its log (or of the range), as the broker says now;
    False when the broker does not answer."""
    partition = TopicPartition(*key)
    try:
        high = consumer.get_watermark_offsets(partition, timeout=5, cached=False)[1]
        (position,) = consumer.position([partition])
    except KafkaException:
        return False
    if position.offset < 0:  # nothing fetched yet: the start is past the end of the log, or the log is empty
        return True
    return position.offset >= min(high, math.inf if end is None else end)


def _consume_ready(consumer: Consumer, wanted: int) -> list[Message]:
    """Up to ``wanted`` messages: those already fetched, or the first to arrive within half a second and
    those fetched with it (``consume(wanted, timeout)`` alone would wait out its timeout for ``wanted``)."""
    messages = consumer.consume(wanted, 0)
    if not messages:
        messages = consumer.consume(1, 0.5)
        if messages and wanted > 1:
            messages += consumer.consume(wanted - 1, 0)
    return messages


def _batches(records: list[Record]) -> list[list[Record]]:
    """Consecutive runs of up to ``BATCH_MESSAGES`` records and about ``BATCH_BYTES`` of values."""
    batches: list[list[Record]] = []
    batch: list[Record] = []
    size = 0
    for record in records:
        batch.append(record)
        size += len(record.value or b"")
        if size >= BATCH_BYTES or len(batch) >= BATCH_MESSAGES:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)
    return batches


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis SCAN pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
