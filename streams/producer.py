"""A batching producer of inference events for serving systems, and the columnar batch encoders.

``EventProducer.send`` validates one event against the contract (a bad one raises ``ValueError``
there, in the caller, and nothing else is lost), buffers it per (model, model_version), and hands a
buffer to Kafka as one message when it holds ``max_batch_events`` events or its oldest event has
waited ``linger_seconds``. Messages are keyed by model name and encoded as the contract's
columnar batch (Apache Arrow IPC or JSON) or as JSON rows.

No background thread: librdkafka already sends from threads of its own, and a linger timer thread
would add a lock handoff to every ``send`` and a thread to every serving process for the one case
it helps (traffic that stops for good: a buffer then waits for the next ``send``, ``poll`` or
``flush``). A process whose traffic may pause calls ``poll()`` now and then (docs/producer.md).
``send``, ``poll`` and ``flush`` may be called from any number of threads.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from numbers import Integral, Real
from types import TracebackType
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Producer

from streams import DriftstreamError
from streams.decode import Invalid, Limits, parse_event, parse_timestamp
from streams.settings import Settings

log = logging.getLogger(__name__)

ARROW_CONTENT_TYPE = "application/vnd.apache.arrow.stream"
Format = Literal["arrow", "json", "rows"]
FORMATS: tuple[Format, ...] = ("arrow", "json", "rows")

_EVENT_KEYS = frozenset({"model", "model_version", "event_id", "timestamp", "features", "prediction", "segment"})
_INT64 = (-(2**63), 2**63 - 1)
_RECORD_OVERHEAD = 1024  # bytes of a Kafka record besides its key and value: headers, lengths, CRC


# -- encoders ----------------------------------------------------------------------------------------------


def columnar_json(
    model: str, model_version: str | None, events: Sequence[Mapping[str, Any]], *, checked: bool = False
) -> bytes:
    """The contract's JSON columnar batch of ``events`` (contract-shape event dicts of this model and version).

    A column is present when some event has that field; an event without it has null there.
    Timestamps and predictions go as sent. Raises ``ValueError`` for events this batch cannot carry;
    ``checked``: the events' values were checked already (``EventProducer.send``), skip that."""
    columns = _columns(model, model_version, events, checked)
    envelope: dict[str, Any] = {"model": model}
    if model_version is not None:
        envelope["model_version"] = model_version
    envelope["columns"] = columns
    return orjson.dumps(envelope)


def columnar_arrow(
    model: str, model_version: str | None, events: Sequence[Mapping[str, Any]], *, checked: bool = False
) -> bytes | None:
    """The same batch as one Arrow IPC stream message; None when a column's values are of kinds Arrow
    cannot hold in one type (numbers and text, say): send ``columnar_json`` instead.

    Numbers are int64 when every value is an int, float64 when every value is a float (a column mixing them
    goes as JSON: ints and floats name different categories), text utf8, booleans bool; timestamps float64
    Unix seconds; a prediction of class probabilities a struct of one float64 field per class; a feature
    null in every row Arrow's null type (the worker reads it as sent: null, not absent). ``model`` and
    ``model_version`` are in the schema's metadata.
    ``ValueError`` and ``checked`` as for ``columnar_json``."""
    columns = _columns(model, model_version, events, checked)
    if "timestamp" in columns:
        columns["timestamp"] = [_seconds(value) for value in columns["timestamp"]]
    fields: list[pa.Field] = []
    arrays: list[pa.Array] = []
    for name, values in columns.items():
        kind = _arrow_type(values)
        if kind is False:
            return None
        if kind is None:  # null in every row: kept (Arrow's null type), as the feature was sent, null
            kind = pa.null()
        fields.append(pa.field(name, kind))
        arrays.append(pa.array(values, type=kind))
    metadata = {b"model": model.encode()}
    if model_version is not None:
        metadata[b"model_version"] = model_version.encode()
    schema = pa.schema(fields, metadata=metadata)
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def _columns(
    model: str, model_version: str | None, events: Sequence[Mapping[str, Any]], checked: bool = False
) -> dict[str, list[Any]]:
    """Column name -> one value per event (None where an event lacks it), in the contract's names."""
    if not events:
        raise ValueError("a columnar batch needs at least one event")
    n = len(events)
    columns: dict[str, list[Any]] = {}
    features_columns: dict[str, list[Any]] = {}  # then these, each in the order first seen
    segment_columns: dict[str, list[Any]] = {}

    def put(name: str, row: int, value: Any, into: dict[str, list[Any]] = columns) -> None:
        if not checked:
            _check_value(name, row, value)
        column = into.get(name)
        if column is None:
            column = into[name] = [None] * n
        column[row] = value

    for name in ("event_id", "timestamp", "prediction"):  # the contract's order
        if any(event.get(name) is not None for event in events):
            columns[name] = [None] * n
    for row, event in enumerate(events):
        unknown = set(event) - _EVENT_KEYS
        if unknown:
            raise ValueError(f"event {row}: a columnar batch carries only the contract's fields, not {sorted(unknown)}")
        if event.get("model", model) != model:
            raise ValueError(f"event {row}: model {event.get('model')!r} is not the batch's {model!r}")
        if event.get("model_version", model_version) != model_version:
            raise ValueError(f"event {row}: model_version {event.get('model_version')!r} is not the batch's "
                             f"{model_version!r}")  # fmt: skip
        features = event.get("features")
        if not isinstance(features, Mapping):
            raise ValueError(f"event {row}: features must be a mapping, got {type(features).__name__}")
        for name in ("event_id", "timestamp", "prediction"):
            value = event.get(name)
            if value is not None:
                put(name, row, value)
        for key, value in features.items():
            put(f"features.{key}", row, value, features_columns)
        segment = event.get("segment")
        if segment is not None:
            if not isinstance(segment, Mapping):
                raise ValueError(f"event {row}: segment must be a mapping, got {type(segment).__name__}")
            for key, value in segment.items():
                put(f"segment.{key}", row, value, segment_columns)
    return columns | features_columns | segment_columns


def _check_value(name: str, row: int, value: Any) -> None:
    """Raise ``ValueError`` for a value JSON cannot carry as it is: NaN and infinities (orjson would
    write null, a silent missing value) and integers beyond 64 bits."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"event {row}: {name} is {value}: not finite")
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"event {row}: {name} {value} does not fit in 64 bits")
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _check_value(f"{name}[{key!r}]", row, inner)


def _seconds(timestamp: Any) -> float | None:
    try:
        return parse_timestamp(timestamp)
    except Invalid as exc:
        raise ValueError(exc.detail) from None


def _arrow_type(values: list[Any]) -> pa.DataType | None | Literal[False]:
    """The Arrow type of a column; None when every value is null, False when its kinds do not share one."""
    kinds = {_kind(value) for value in values if value is not None}
    if not kinds:
        return None
    if kinds == {"int"}:
        return pa.int64()
    if kinds == {"float"}:
        # Not ints and floats together: a float64 column would name the int 3 "3.0" where a feature or
        # segment is taken as text (the worker reads ints and floats apart, as JSON keeps them).
        return pa.float64()
    if kinds == {"str"}:
        return pa.string()
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"probabilities"}:
        classes: dict[str, None] = {}  # first seen first
        for value in values:
            if value is not None:
                classes.update(dict.fromkeys(value))
        # A row's classes in another order than the struct's would pick another top class on a tie.
        position = {name: i for i, name in enumerate(classes)}
        for value in values:
            if value is not None:
                at = [position[name] for name in value]
                if at != sorted(at):
                    return False
        return pa.struct([pa.field(str(name), pa.float64()) for name in classes])
    return False


_KINDS = {bool: "bool", int: "int", float: "float", str: "str"}


def _kind(value: Any) -> str:
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping) and all(
        isinstance(p, (int, float)) and not isinstance(p, bool) for p in value.values()
    ):
        return "probabilities"
    return type(value).__name__  # a kind of its own: no Arrow type here


# -- the producer ------------------------------------------------------------------------------------------


class DeliveryError(DriftstreamError):
    """Events the broker did not take: ``failed`` were refused or timed out since the last report,
    ``pending`` had no answer yet when ``flush``'s timeout ran out; ``error`` is the last error's text."""

    def __init__(self, failed: int, pending: int, error: str | None) -> None:
        parts = [f"{_events(failed)} not delivered" if failed else "",
                 f"{_events(pending)} still unacknowledged" if pending else ""]  # fmt: skip
        reason = f": {error}" if error else ""
        super().__init__(" and ".join(p for p in parts if p) + reason)
        self.failed = failed
        self.pending = pending
        self.error = error


def _events(count: int) -> str:
    return f"{count} event" if count == 1 else f"{count} events"


@dataclass
class DeliveryStats:
    """Counts since the producer started (events unless named otherwise)."""

    sent: int = 0  # handed to the Kafka client
    delivered: int = 0  # acknowledged by the broker
    failed: int = 0  # refused, or not acknowledged within message.timeout.ms
    messages: int = 0  # Kafka messages handed to the client
    json_fallbacks: int = 0  # arrow-format batches sent as JSON columnar (kinds Arrow cannot type)
    last_error: str | None = None

    @property
    def pending(self) -> int:
        """Handed to Kafka, no answer yet."""
        return self.sent - self.delivered - self.failed


@dataclass
class _Buffer:
    events: list[dict[str, Any]]
    since: float  # clock() when its oldest event came


class EventProducer:
    """Buffers inference events and sends them to Kafka in batches (see the module's docstring).

    ``settings`` (default: from the environment) give the brokers, SASL/SSL, the events topic and the
    input bounds the worker applies; ``kafka_config`` adds librdkafka settings (e.g.
    ``message.timeout.ms``); ``producer`` shares an existing confluent-kafka producer instead of
    making one. ``flush`` raises :class:`DeliveryError` for events the broker did not take.
    ``delivery_reports=False`` sends without a delivery callback of its own, so that a shared
    producer's default one (its ``on_delivery`` setting) sees every message: then nothing is
    counted as delivered or failed, and ``flush`` raises nothing."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        format: Format = "arrow",  # noqa: A002 - the name a caller reads
        max_batch_events: int = 1000,
        linger_seconds: float = 0.05,
        topic: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        kafka_config: Mapping[str, Any] | None = None,
        producer: Producer | None = None,
        delivery_reports: bool = True,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if not 1 <= max_batch_events <= self.settings.max_events_per_message:
            raise ValueError(f"max_batch_events must be 1 to max_events_per_message "
                             f"({self.settings.max_events_per_message}), got {max_batch_events}")  # fmt: skip
        if not (math.isfinite(linger_seconds) and linger_seconds >= 0):
            raise ValueError(f"linger_seconds must be >= 0, got {linger_seconds}")
        self.format: Format = format
        self.max_batch_events = max_batch_events
        self.linger_seconds = linger_seconds
        self.topic = topic or self.settings.topic_events
        self.clock = clock
        self.delivery_reports = delivery_reports
        self.limits = Limits(
            max_message_bytes=self.settings.max_message_bytes,
            max_events_per_message=self.settings.max_events_per_message,
            max_name_length=self.settings.max_name_length,
            max_string_length=self.settings.max_string_length,
            max_segment_keys=self.settings.max_segment_keys,
            max_segment_length=self.settings.max_segment_length,
        )
        self.producer = producer or Producer({
            **self.settings.confluent_config(),
            "linger.ms": 5,
            "message.max.bytes": self.settings.max_message_bytes,
            **(kafka_config or {}),
        })  # fmt: skip
        self.stats = DeliveryStats()
        self._buffers: dict[tuple[str, str | None], _Buffer] = {}
        self._lock = threading.Lock()  # the buffers
        self._stats_lock = threading.Lock()  # the counts: delivery callbacks run in whichever thread polls
        self._reported_failed = 0  # stats.failed already raised by a flush
        self._closed = False

    # -- sending --

    def send(
        self,
        model: str,
        features: Mapping[str, Any],
        prediction: Any = None,
        *,
        event_id: str | int | None = None,
        timestamp: float | str | datetime | None = None,
        model_version: str | int | None = None,
        segment: Mapping[str, Any] | None = None,
    ) -> None:
        """Buffer one inference event; send the buffers that are due. ``ValueError`` when the worker
        would reject it (what is wrong, named), and then nothing is buffered.

        ``timestamp``: Unix seconds, RFC 3339 text or a datetime (naive: UTC); None: the Kafka
        record's. ``prediction``: a number, a class, or a mapping of class -> probability."""
        event: dict[str, Any] = {"model": model}
        if model_version is not None:
            event["model_version"] = model_version
        if event_id is not None:
            event["event_id"] = event_id
        if timestamp is not None:
            event["timestamp"] = timestamp
        event["features"] = features
        if prediction is not None:
            event["prediction"] = prediction
        if segment is not None:
            event["segment"] = segment
        self.send_event(event)

    def send_event(self, event: Mapping[str, Any]) -> None:
        """``send`` for an event already in the contract's shape (a dict as the JSON would decode)."""
        if self._closed:
            raise RuntimeError("EventProducer is closed")
        checked = self._checked(event)
        now = self.clock()
        key = (checked["model"], checked.get("model_version"))
        with self._lock:
            buffer = self._buffers.get(key)
            if buffer is None:
                buffer = self._buffers[key] = _Buffer([], now)
            buffer.events.append(checked)
            due = self._take_due(now)
        self._send_batches(due)
        self.producer.poll(0)  # delivery callbacks

    def poll(self, timeout: float = 0.0) -> int:
        """Send the buffers whose oldest event has waited ``linger_seconds``, serve delivery reports
        (for up to ``timeout`` seconds); the number of events sent."""
        with self._lock:
            due = self._take_due(self.clock())
        self._send_batches(due)
        self.producer.poll(timeout)
        return sum(len(events) for _, events in due)

    def send_buffered(self) -> int:
        """Hand every buffered event to the Kafka client now, without waiting for delivery; how many."""
        with self._lock:
            due = [(key, buffer.events) for key, buffer in self._buffers.items()]
            self._buffers.clear()
        self._send_batches(due)
        return sum(len(events) for _, events in due)

    def flush(self, timeout: float | None = None) -> None:
        """Send every buffered event and wait up to ``timeout`` seconds (None: as long as it takes)
        for the broker's answers. Raises :class:`DeliveryError` when events failed since the last
        report, or some are still unanswered at the timeout."""
        self.send_buffered()
        self.producer.flush(-1 if timeout is None else timeout)
        if not self.delivery_reports:
            return
        with self._stats_lock:
            failed = self.stats.failed - self._reported_failed
            self._reported_failed = self.stats.failed
            pending, error = self.stats.pending, self.stats.last_error
        if failed or pending:
            raise DeliveryError(failed, pending, error)

    def close(self, timeout: float | None = None) -> None:
        """``flush``, then refuse further events. Raises as ``flush`` does."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an exception is on its way: deliver what is buffered, and do not hide the exception
            self.close()
        except DeliveryError as error:
            log.error("while closing after %s: %s", exc_type.__name__, error)

    # -- inside --

    def _checked(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The event in plain Python types (numpy scalars too), checked as the worker will check it."""
        unknown = set(event) - _EVENT_KEYS
        if unknown:
            raise ValueError(f"unknown event fields {sorted(unknown)}; the contract's are {sorted(_EVENT_KEYS)}")
        plain: dict[str, Any] = {}
        for name, value in event.items():
            if value is None:
                continue
            if name in ("model_version", "event_id") and isinstance(value, Integral) and not isinstance(value, bool):
                value = str(value)
            elif name == "timestamp" and isinstance(value, datetime):
                value = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
            plain[name] = _plain(name, value)
        try:
            parse_event(plain, self.limits)
        except Invalid as exc:
            raise ValueError(f"{exc.reason}: {exc.detail}") from None
        return plain

    def _take_due(self, now: float) -> list[tuple[tuple[str, str | None], list[dict[str, Any]]]]:
        """Remove and return the buffers that are full or have waited long enough (hold ``_lock``)."""
        due = [key for key, buffer in self._buffers.items()
               if len(buffer.events) >= self.max_batch_events or now - buffer.since >= self.linger_seconds]  # fmt: skip
        return [(key, self._buffers.pop(key).events) for key in due]

    def _send_batches(self, batches: list[tuple[tuple[str, str | None], list[dict[str, Any]]]]) -> None:
        for (model, version), events in batches:
            self._send(model, version, events)

    def _send(self, model: str, version: str | None, events: list[dict[str, Any]]) -> None:
        value, headers = self._encode(model, version, events)
        key = model.encode()
        # The worker takes values up to max_message_bytes; the client counts key and headers too.
        if len(value) > self.settings.max_message_bytes - len(key) - _RECORD_OVERHEAD:
            if len(events) > 1:
                half = len(events) // 2
                self._send(model, version, events[:half])
                self._send(model, version, events[half:])
                return
            self._failed(1, f"one event of {len(value)} bytes > max_message_bytes {self.settings.max_message_bytes}")
            return
        report = functools.partial(self._on_delivery, len(events))
        while True:
            try:
                if self.delivery_reports:
                    self.producer.produce(self.topic, key=key, value=value, headers=headers,
                                          on_delivery=report)  # fmt: skip
                else:  # the producer's default callback, if any, gets the report
                    self.producer.produce(self.topic, key=key, value=value, headers=headers)
                break
            except BufferError:  # the client's queue is full: let it send, then try again
                self.producer.poll(0.05)
            except KafkaException as exc:  # refused before sending (a shared producer's smaller limit, say)
                error = exc.args[0] if exc.args else None
                self._failed(len(events), error.str() if isinstance(error, KafkaError) else str(exc))
                return
        with self._stats_lock:
            self.stats.sent += len(events)
            self.stats.messages += 1

    def _failed(self, count: int, error: str) -> None:
        """``count`` events that never reached the client: failed, for ``flush`` to report."""
        log.error("%d events not sent to %s: %s", count, self.topic, error)
        with self._stats_lock:
            self.stats.sent += count
            self.stats.failed += count
            self.stats.last_error = error

    def _encode(self, model: str, version: str | None, events: list[dict[str, Any]]) -> tuple[bytes, Any]:
        if self.format == "rows":  # one event a message: an object; else a batch envelope, even of one
            return orjson.dumps(events[0] if self.max_batch_events == 1 else events), None
        if self.format == "arrow":
            value = columnar_arrow(model, version, events, checked=True)
            if value is not None:
                return value, [("content-type", ARROW_CONTENT_TYPE)]
            with self._stats_lock:
                self.stats.json_fallbacks += 1
        return columnar_json(model, version, events, checked=True), None

    def _on_delivery(self, count: int, error: KafkaError | None, _message: Any) -> None:
        with self._stats_lock:
            if error is None:
                self.stats.delivered += count
            else:
                self.stats.failed += count
                self.stats.last_error = error.str()


def _plain(name: str, value: Any) -> Any:
    """``value`` with numpy (or other ``numbers``) scalars as Python's own, mappings as dicts, and
    ``ValueError`` for what JSON cannot carry (NaN, infinities, integers beyond 64 bits)."""
    kind = type(value)
    if kind is float:  # the common case first: isinstance against the numbers ABCs is slow
        if not math.isfinite(value):
            raise ValueError(f"{name} is {value}: not finite (the worker would reject the event)")
        return value
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{name} {value} does not fit in 64 bits")
        return value
    if kind is dict or isinstance(value, Mapping):
        plain = {}
        for key, inner in value.items():
            if type(key) is not str:  # JSON's keys are text: class 1 (say) becomes "1"
                if isinstance(key, bool) or not isinstance(key, Integral):
                    raise ValueError(f"{name} keys must be strings, got {type(key).__name__} {key!r}")
                key = str(int(key))
            kind = type(inner)
            if kind is str or kind is bool or inner is None or (kind is float and math.isfinite(inner)):
                plain[key] = inner
            else:
                plain[key] = _plain(f"{name}[{key!r}]", inner)
        return plain
    if isinstance(value, np.bool_):  # numpy's boolean is neither a bool nor a number
        return bool(value)
    if isinstance(value, Integral):
        number = int(value)
        if not _INT64[0] <= number <= _INT64[1]:
            raise ValueError(f"{name} {number} does not fit in 64 bits")
        return number
    if isinstance(value, Real):
        real = float(value)
        if not math.isfinite(real):
            raise ValueError(f"{name} is {real}: not finite (the worker would reject the event)")
        return real
    return value  # anything else: parse_event names what is wrong with it
