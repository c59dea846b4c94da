"""The batching producer: the columnar encoders' shapes, when batches leave, and delivery failures surfaced."""

from __future__ import annotations

import itertools
import math
import re
import threading
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from streams.cli import app
from streams.decode import parse_timestamp
from streams.kafka import ensure_topics
from streams.producer import (
    ARROW_CONTENT_TYPE,
    DeliveryError,
    EventProducer,
    columnar_arrow,
    columnar_json,
)
from streams.services import free_port
from streams.settings import Settings
from streams.simulate import Drift, SegmentMix, Traffic, VersionSwitch, model_events
from tests.integration.harness import isolated_settings, read_topic

EVENTS: list[dict[str, Any]] = [
    {"model": "fraud", "model_version": "3", "event_id": "e1", "timestamp": "2026-11-23T10:00:00Z",
     "features": {"amount": 12.0, "country": "DE", "is_new": True, "age": None, "count": 3},
     "prediction": {"fraud": 0.93, "ok": 0.07}, "segment": {"region": "eu", "tier": 1}},
    {"model": "fraud", "event_id": "e2", "timestamp": 1764583200.5,
     "features": {"amount": 7.25, "count": 4, "late": "x"}, "prediction": {"ok": 1}},
    {"features": {"amount": 0.5, "country": None, "is_new": False}},
]  # fmt: skip


def rows_of_columns(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Contract-shape events back from columns, without the nulls (a null is a missing value)."""
    lengths = {len(values) for values in columns.values()}
    assert len(lengths) == 1, f"columns of different lengths: {lengths}"
    rows: list[dict[str, Any]] = []
    for i in range(lengths.pop()):
        row: dict[str, Any] = {"features": {}}
        for name, values in columns.items():
            value = values[i]
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if v is not None}
            if value is None:
                continue
            prefix, _, key = name.partition(".")
            if prefix in ("features", "segment"):
                row.setdefault(prefix, {})[key] = value
            else:
                row[name] = value
        rows.append(row)
    return rows


def without_nulls(event: dict[str, Any], arrow: bool = False) -> dict[str, Any]:
    """What a batch carries of an event: its fields but model and version, no nulls; in Arrow, seconds."""
    row = {k: v for k, v in event.items() if k not in ("model", "model_version") and v is not None}
    row["features"] = {k: v for k, v in event["features"].items() if v is not None}
    if arrow and "timestamp" in row:
        row["timestamp"] = parse_timestamp(row["timestamp"])
    return row


def read_arrow(value: bytes) -> pa.Table:
    reader = pa.ipc.open_stream(value)
    table = reader.read_all()
    assert table.num_rows and len(table.to_batches()) == 1, "one record batch"
    return table


# -- encoders -----------------------------------------------------------------------------------------------


def test_json_columnar_carries_each_event_in_the_contracts_shape() -> None:
    batch = orjson.loads(columnar_json("fraud", "3", EVENTS))
    assert set(batch) == {"model", "model_version", "columns"}
    assert (batch["model"], batch["model_version"]) == ("fraud", "3")
    columns = batch["columns"]
    assert list(columns)[:3] == ["event_id", "timestamp", "prediction"]
    assert columns["timestamp"] == ["2026-11-23T10:00:00Z", 1764583200.5, None]  # as sent
    assert columns["prediction"] == [{"fraud": 0.93, "ok": 0.07}, {"ok": 1}, None]
    assert columns["features.country"] == ["DE", None, None]
    assert columns["features.age"] == [None, None, None]  # sent (as null), so present
    assert columns["segment.tier"] == [1, None, None]
    assert rows_of_columns(columns) == [without_nulls(e) for e in EVENTS]


def test_json_columnar_leaves_out_a_missing_version() -> None:
    batch = orjson.loads(columnar_json("fraud", None, [{"features": {"a": 1}}]))
    assert batch == {"model": "fraud", "columns": {"features.a": [1]}}


def test_arrow_carries_each_event_typed_as_the_contract_says() -> None:
    table = read_arrow(columnar_arrow("fraud", "3", EVENTS) or b"")
    schema = table.schema
    assert schema.metadata == {b"model": b"fraud", b"model_version": b"3"}
    types = {field.name: field.type for field in schema}
    assert types == {
        "event_id": pa.string(), "timestamp": pa.float64(),
        "prediction": pa.struct([pa.field("fraud", pa.float64()), pa.field("ok", pa.float64())]),
        "features.amount": pa.float64(), "features.country": pa.string(), "features.is_new": pa.bool_(),
        "features.count": pa.int64(), "features.late": pa.string(),
        "features.age": pa.null(),  # null in every row: sent as null, as in JSON
        "segment.region": pa.string(), "segment.tier": pa.int64(),
    }  # fmt: skip
    assert table.column("timestamp").to_pylist() == [parse_timestamp("2026-11-23T10:00:00Z"), 1764583200.5, None]
    assert table.column("prediction").to_pylist()[1] == {"fraud": None, "ok": 1.0}  # absent class: null
    assert rows_of_columns(table.to_pydict()) == [without_nulls(e, arrow=True) for e in EVENTS]


def test_arrow_without_a_version_has_only_the_model_in_its_metadata() -> None:
    table = read_arrow(columnar_arrow("m", None, [{"features": {"a": 1.5}}]) or b"")
    assert table.schema.metadata == {b"model": b"m"}


@pytest.mark.parametrize(
    ("predictions", "kind"),
    [([0.9, 1.0], pa.float64()), ([1, 0], pa.int64()), (["cat", None], pa.string()), ([True, False], pa.bool_())],
)
def test_arrow_types_a_prediction_by_its_kind(predictions: list[Any], kind: pa.DataType) -> None:
    events = [{"features": {}, "prediction": p} for p in predictions]
    table = read_arrow(columnar_arrow("m", None, events) or b"")
    assert table.schema.field("prediction").type == kind
    assert table.column("prediction").to_pylist() == predictions


def test_probabilities_whose_classes_come_in_another_order_go_as_json() -> None:
    """The top class is the first of the highest: a struct of one order would change a tie's winner."""
    first = {"features": {}, "prediction": {"a": 0.6, "b": 0.4}}
    assert columnar_arrow("m", None, [first, {"features": {}, "prediction": {"b": 0.5, "a": 0.5}}]) is None
    assert columnar_arrow("m", None, [first, {"features": {}, "prediction": {"a": 0.5, "b": 0.5}}]) is not None


@pytest.mark.parametrize("values", [[1.5, "DE"], [True, 1], ["a", {"x": 0.5}], [1, 2.5]])
def test_a_column_of_mixed_kinds_cannot_go_as_arrow(values: list[Any]) -> None:
    """Ints and floats too: as text (a categorical feature, a segment) 1 is "1" and 1.0 "1.0"."""
    events = [{"features": {"a": value}} for value in values]
    assert columnar_arrow("m", None, events) is None
    assert orjson.loads(columnar_json("m", None, events))["columns"]["features.a"] == values


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([], "at least one event"),
        ([{"model": "other", "features": {}}], "model 'other' is not the batch's 'm'"),
        ([{"model_version": "2", "features": {}}], "model_version '2' is not the batch's None"),
        ([{"features": {"a": math.nan}}], "features.a is nan: not finite"),
        ([{"features": {}, "prediction": {"x": math.inf}}], "not finite"),
        ([{"features": {}, "extra": 1}], "not ['extra']"),
        ([{"prediction": 1}], "features must be a mapping"),
    ],
)
def test_the_encoders_refuse_what_a_batch_cannot_carry(events: list[dict[str, Any]], message: str) -> None:
    for encode in (columnar_json, columnar_arrow):
        with pytest.raises(ValueError, match=re.escape(message)):
            encode("m", None, events)


# -- the producer, no broker needed -------------------------------------------------------------------------


def unreachable() -> Settings:
    """Settings whose broker is a closed local port: every message fails or waits."""
    return Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": {"a": math.nan}}, "features['a'] is nan: not finite"),
        ({"features": {"a": np.float64("inf")}}, "features['a'] is inf: not finite"),
        ({"features": {}, "prediction": {"x": math.nan}}, "prediction['x'] is nan: not finite"),
        ({"features": {"a": [1]}}, "invalid_feature_value"),
        ({"features": {}, "timestamp": "yesterday"}, "invalid_timestamp"),
        ({"features": {}, "segment": {"region": ["eu"]}}, "invalid_segment"),
        ({"features": "a=1"}, "invalid_features"),
    ],
)
def test_a_bad_event_raises_at_send_and_loses_nothing_else(kwargs: dict[str, Any], message: str) -> None:
    producer = EventProducer(unreachable(), format="json", max_batch_events=2, linger_seconds=60)
    producer.send("m", {"a": 1.0})
    with pytest.raises(ValueError, match=re.escape(message)):
        producer.send("m", **kwargs)
    producer.send("m", {"a": 2.0})  # the batch fills with the two good events
    assert (producer.stats.sent, producer.stats.messages) == (2, 1)


def test_numpy_scalars_go_as_plain_numbers() -> None:
    clock = itertools.count()
    producer = EventProducer(unreachable(), format="rows", max_batch_events=10, clock=lambda: next(clock))
    producer.send("m", {"x": np.float32(0.5), "n": np.int64(3), "b": np.bool_(True)}, np.float64(0.25))
    (checked,) = producer._buffers["m", None].events
    assert checked == {"model": "m", "features": {"x": 0.5, "n": 3, "b": True}, "prediction": 0.25}
    assert [type(v) for v in checked["features"].values()] == [float, int, bool]


def test_a_failed_delivery_is_counted_and_raised_once() -> None:
    """A real failure: no broker at the address, and messages time out after 300 ms."""
    producer = EventProducer(unreachable(), format="arrow", max_batch_events=4,
                             kafka_config={"message.timeout.ms": 300})  # fmt: skip
    for i in range(10):
        producer.send("m", {"a": float(i)}, event_id=str(i))
    assert (producer.stats.sent, producer.stats.messages) == (8, 2)  # two full batches, 2 events buffered
    with pytest.raises(DeliveryError) as raised:
        producer.flush(10)
    error = raised.value
    assert (error.failed, error.pending) == (10, 0)
    assert error.error and "timed out" in error.error.lower()
    assert f"10 events not delivered: {error.error}" == str(error)
    assert (producer.stats.delivered, producer.stats.failed) == (0, 10)
    producer.flush(1)  # reported already: nothing new to raise


def test_flush_names_the_events_still_unanswered_at_its_timeout() -> None:
    producer = EventProducer(unreachable(), format="rows", max_batch_events=100)
    producer.send("m", {"a": 1})
    with pytest.raises(DeliveryError) as raised:
        producer.flush(0.3)
    assert (raised.value.failed, raised.value.pending) == (0, 1)
    assert "1 event still unacknowledged" in str(raised.value)


def test_a_closed_producer_refuses_events() -> None:
    producer = EventProducer(unreachable(), format="json")
    producer.close(0.1)
    with pytest.raises(RuntimeError, match="closed"):
        producer.send("m", {"a": 1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"format": "csv"}, "format must be one of arrow, json, rows"),
     ({"max_batch_events": 0}, "max_batch_events must be 1 to"),
     ({"max_batch_events": 10_001}, "max_batch_events must be 1 to"),
     ({"linger_seconds": -1}, "linger_seconds must be >= 0")],
)  # fmt: skip
def test_bad_producer_settings_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventProducer(unreachable(), **kwargs)


# -- with a broker ------------------------------------------------------------------------------------------


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    return isolated_settings(kafka_bootstrap, "redis://unused", "producer")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.integration
def test_batches_leave_when_full_or_lingered_one_per_model_version(settings: Settings) -> None:
    clock = FakeClock()
    producer = EventProducer(settings, format="arrow", max_batch_events=3, linger_seconds=0.05, clock=clock)
    sent: list[int] = []
    for i in range(7):
        producer.send("fraud", {"x": float(i)}, i / 10, event_id=f"f{i}", model_version="1")
        sent.append(producer.stats.sent)
    assert sent == [0, 0, 3, 3, 3, 6, 6]  # full batches leave at once; the seventh event waits
    producer.send("fraud", {"x": 9.0}, 0.9, event_id="v2", model_version="2")  # a buffer of its own
    producer.send("churn", {"y": "a"}, "stay", event_id="c0")
    clock.now += 0.049
    assert producer.poll() == 0 and producer.stats.sent == 6  # not lingered long enough
    clock.now += 0.002
    producer.send("churn", {"y": "b"}, "leave", event_id="c1")  # a send sends what has lingered, its own too
    assert producer.stats.sent == 10
    producer.send("fraud", {"x": 10.0}, 1.0, event_id="late", model_version="1")
    clock.now += 0.06
    assert producer.poll() == 1
    producer.flush(10)
    assert (producer.stats.delivered, producer.stats.failed) == (11, 0)

    batches = []
    for message in read_topic(settings, settings.topic_events):
        assert dict(message.headers() or []) == {"content-type": ARROW_CONTENT_TYPE.encode()}
        table = read_arrow(message.value())
        metadata = table.schema.metadata
        assert metadata[b"model"] == message.key()
        batches.append((metadata[b"model"].decode(), metadata.get(b"model_version", b"").decode(),
                        table.column("event_id").to_pylist()))  # fmt: skip
    fraud_v1 = [ids for model, version, ids in batches if (model, version) == ("fraud", "1")]
    assert fraud_v1 == [["f0", "f1", "f2"], ["f3", "f4", "f5"], ["f6"], ["late"]]
    assert sorted(batches) == sorted([("fraud", "1", ids) for ids in fraud_v1]
                                     + [("fraud", "2", ["v2"]), ("churn", "", ["c0", "c1"])])  # fmt: skip


@pytest.mark.integration
def test_a_batch_arrow_cannot_type_goes_as_json_columnar(settings: Settings) -> None:
    with EventProducer(settings, format="arrow", max_batch_events=2) as producer:
        producer.send("m", {"a": 1.5}, event_id="1")
        producer.send("m", {"a": "text"}, event_id="2")
        producer.send("m", {"a": 2.5}, event_id="3")
        producer.send("m", {"a": 3.0}, event_id="4")
    assert producer.stats.json_fallbacks == 1
    first, second = read_topic(settings, settings.topic_events)
    assert not first.headers()
    assert orjson.loads(first.value()) == {"model": "m", "columns": {"event_id": ["1", "2"],
                                                                      "features.a": [1.5, "text"]}}  # fmt: skip
    assert read_arrow(second.value()).to_pydict() == {"event_id": ["3", "4"], "features.a": [2.5, 3.0]}


@pytest.mark.integration
def test_a_shared_producers_own_delivery_callback_can_keep_the_reports(settings: Settings) -> None:
    reports: list[tuple[Any, bytes]] = []
    shared = Producer({**settings.confluent_config(), "on_delivery": lambda e, m: reports.append((e, m.key()))})
    producer = EventProducer(settings, format="json", max_batch_events=2, producer=shared, delivery_reports=False)
    for i in range(3):
        producer.send("m", {"a": i})
    producer.flush(10)
    assert reports == [(None, b"m"), (None, b"m")]  # two messages: 2 events, then 1
    assert (producer.stats.sent, producer.stats.delivered) == (3, 0)  # its callback, not this one's


@pytest.mark.integration
def test_a_batch_over_the_message_limit_goes_in_parts_and_an_event_over_it_fails_alone(
    kafka_bootstrap: str,
) -> None:
    settings = isolated_settings(kafka_bootstrap, "redis://unused", "producer", max_message_bytes=4096)
    producer = EventProducer(settings, format="rows", max_batch_events=40)
    big = {f"feature_{i}": "x" * 100 for i in range(50)}  # one event of about 6 kB
    for i in range(40):
        producer.send("m", big if i == 7 else {"text": "y" * 200}, event_id=str(i))
    with pytest.raises(DeliveryError) as raised:
        producer.flush(10)
    assert (raised.value.failed, raised.value.pending) == (1, 0)
    assert re.fullmatch(r"1 event not delivered: one event of \d{4} bytes > max_message_bytes 4096", str(raised.value))
    messages = read_topic(settings, settings.topic_events)
    assert len(messages) > 3 and all(len(m.value()) <= 4096 for m in messages)
    ids = [int(e["event_id"]) for m in messages for e in orjson.loads(m.value())]
    assert sorted(ids) == [i for i in range(40) if i != 7]


def test_class_numbers_as_keys_become_text() -> None:
    producer = EventProducer(unreachable(), format="rows", max_batch_events=10, linger_seconds=60)
    producer.send("m", {}, {0: 0.25, np.int64(1): 0.75})
    assert producer._buffers["m", None].events[0]["prediction"] == {"0": 0.25, "1": 0.75}
    with pytest.raises(ValueError, match=re.escape("prediction keys must be strings, got tuple (0, 1)")):
        producer.send("m", {}, {(0, 1): 1.0})


@pytest.mark.integration
def test_threads_share_one_producer_and_every_event_goes_once(settings: Settings) -> None:
    producer = EventProducer(settings, format="arrow", max_batch_events=7, linger_seconds=0.001)

    def serve(worker: int) -> None:
        for i in range(500):
            producer.send(f"m{worker % 2}", {"x": float(i)}, event_id=f"{worker}-{i}")
            if i % 50 == 0:
                producer.poll()

    threads = [threading.Thread(target=serve, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    producer.close(10)
    assert (producer.stats.sent, producer.stats.delivered) == (2000, 2000)
    messages = read_topic(settings, settings.topic_events)
    ids = [i for m in messages for i in read_arrow(m.value()).column("event_id").to_pylist()]
    assert sorted(ids) == sorted(f"{w}-{i}" for w in range(4) for i in range(500))


def simulated(count: int, traffic: Traffic) -> list[dict[str, Any]]:
    """The events ``driftstream simulate`` sends, but their timestamps (the clock's)."""
    return [event for i in range(len(traffic.models)) for event in itertools.islice(model_events(traffic, i), count)]


@pytest.mark.integration
@pytest.mark.parametrize("wire_format", ["arrow", "json"])
def test_simulate_sends_columnar_batches_of_the_same_events(
    kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch, wire_format: str
) -> None:
    monkeypatch.setenv("DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("DRIFTSTREAM_TOPIC_EVENTS", f"sim-{unique}")
    settings = Settings()
    ensure_topics(settings)
    args = ["simulate", "--count", "300", "--rate", "0", "--batch-size", "50", "--format", wire_format,
            "--models", "fraud,churn", "--numeric", "2", "--categorical", "1", "--segment", "region=eu,us",
            "--drift", "f1:null_rate:100:1.0", "--version-switch", "120:v2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sent 600 events" in result.output
    received: list[dict[str, Any]] = []
    for message in read_topic(settings, settings.topic_events):
        if wire_format == "arrow":
            assert dict(message.headers() or []) == {"content-type": ARROW_CONTENT_TYPE.encode()}
            table = read_arrow(message.value())
            model, version = (table.schema.metadata[k].decode() for k in (b"model", b"model_version"))
            columns = table.to_pydict()
        else:
            assert not message.headers()
            batch = orjson.loads(message.value())
            model, version, columns = batch["model"], batch["model_version"], batch["columns"]
        assert message.key() == model.encode() and 1 <= len(columns["event_id"]) <= 50
        for row in rows_of_columns(columns):
            received.append({"model": model, "model_version": version, **row})
    expected = [without_nulls(event) | {"model": event["model"], "model_version": event["model_version"]}
                for event in simulated(300, command_traffic())]  # fmt: skip
    for event in received + expected:
        del event["timestamp"]
    assert sorted(received, key=lambda e: e["event_id"]) == sorted(expected, key=lambda e: e["event_id"])
    assert any("f1" not in e["features"] for e in received)  # the null-rate drift arrives as missing values


def command_traffic() -> Traffic:
    """The traffic of those simulate options (the seed is the command's default, 7)."""
    return Traffic(("fraud", "churn"), 2, 1, 7, (Drift.parse("f1:null_rate:100:1.0"),),
                   segments=(SegmentMix.parse("region=eu,us"),), versions=(VersionSwitch.parse("120:v2"),))  # fmt: skip
