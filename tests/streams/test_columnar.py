"""Columnar envelopes (JSON columns and Arrow streams): the same monitors' results as row events, per-row
rejections with their index, whole-message rejections with a reason."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from streams.columnar import ARROW_CONTENT_TYPE, decode_arrow, decode_events
from streams.decode import REASONS, Limits, decode_message
from streams.engine import Engine, Record
from streams.join import JoinData, MemoryJoinStore, stored_float_values, stored_value
from streams.metrics import Metrics
from streams.producer import columnar_arrow
from streams.settings import ModelSettings, Settings
from streams.simulate import Drift, SegmentMix, Traffic, VersionSwitch, model_events
from streams.state import MemoryStateStore

LIMITS = Limits()
T0 = 1.8e9


def json_columns(events: Sequence[dict[str, Any]]) -> bytes:
    """Events of one model and version as a columnar JSON envelope (the contract's shape)."""
    return orjson.dumps({"model": events[0]["model"], "model_version": events[0].get("model_version"),
                         "columns": _columns(events)})  # fmt: skip


def arrow_stream(events: Sequence[dict[str, Any]], types: dict[str, pa.DataType] | None = None) -> bytes:
    """The same events as an Arrow IPC stream of one record batch (types inferred by pyarrow)."""
    columns = _columns(events)
    arrays = {name: pa.array(values, type=(types or {}).get(name)) for name, values in columns.items()}
    batch = pa.RecordBatch.from_pydict(arrays)
    metadata = {b"model": events[0]["model"].encode()}
    if events[0].get("model_version") is not None:
        metadata[b"model_version"] = events[0]["model_version"].encode()
    batch = batch.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _columns(events: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    features = dict.fromkeys(name for event in events for name in event["features"])
    keys = dict.fromkeys(key for event in events for key in (event.get("segment") or {}))
    columns: dict[str, list[Any]] = {}
    for field in ("event_id", "timestamp", "prediction"):
        if any(field in event for event in events):
            columns[field] = [event.get(field) for event in events]
    for name in features:
        columns[f"features.{name}"] = [event["features"].get(name) for event in events]
    for key in keys:
        columns[f"segment.{key}"] = [(event.get("segment") or {}).get(key) for event in events]
    return columns


def messages(events: list[dict[str, Any]], form: str, size: int) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    """The events in messages of ``size`` (a message holds one version: a switch starts a new one)."""
    out = []
    for _, group in itertools.groupby(events, key=lambda event: event.get("model_version")):
        run = list(group)
        for start in range(0, len(run), size):
            part = run[start : start + size]
            if form == "single":
                out += [(orjson.dumps(event), []) for event in part]
            elif form == "rows":
                out.append((orjson.dumps(part), []))
            elif form == "json":
                out.append((json_columns(part), []))
            elif form == "producer":  # EventProducer's encoder: leaves out a column null in every row
                value = columnar_arrow(part[0]["model"], part[0]["model_version"], part)
                assert value is not None
                out.append((value, [("content-type", ARROW_CONTENT_TYPE.encode())]))
            else:
                out.append((arrow_stream(part), [("content-type", ARROW_CONTENT_TYPE.encode())]))
    return out


def run(config: Settings, items: list[tuple[bytes, list[tuple[str, bytes]]]], per_batch: int
        ) -> tuple[list[dict[str, Any]], list[bytes], dict[str, Any], dict[Any, bytes]]:  # fmt: skip
    """Alerts, DLQ values, the model's snapshot and the join data stored, after feeding the messages
    ``per_batch`` at a time."""
    engine = Engine(config, MemoryStateStore(), Metrics(CollectorRegistry()), clock=lambda: T0 + 100)
    records = [Record("events", 0, offset, T0 + offset * 1e-3, b"fraud", value, headers)
               for offset, (value, headers) in enumerate(items)]  # fmt: skip

    async def feed() -> tuple[list[dict[str, Any]], list[bytes]]:
        alerts, dlq = [], []
        for start in range(0, len(records), per_batch):
            out = await engine.process(records[start : start + per_batch])
            alerts += out.alert_objects
            dlq += [value for _, value, _ in out.dlq]
        await engine.checkpoint()  # stores the join data too
        return alerts, dlq

    alerts, dlq = asyncio.run(feed())
    assert isinstance(engine.joins, MemoryJoinStore)
    joins = {key: value for key, (_, value) in engine.joins._entries.items()}
    return alerts, dlq, engine.partitions[("events", 0)].monitors["fraud"].snapshot(), joins


def settings(unique: str) -> Settings:
    return Settings(app_id=f"columnar-{unique}", state_prefix=f"c-{unique}", reference_size=1000, window_size=500)


@pytest.mark.parametrize("drift", [Drift("f1", 2500, "mean_shift", 1.5), Drift("c0", 2500, "category_mix", 0.6),
                                   Drift("f2", 2500, "null_rate", 0.4), Drift("f3", 2500, "null_rate", 1.0)],
                         ids=lambda drift: f"{drift.kind}-{drift.magnitude}")  # fmt: skip
def test_every_form_of_message_gives_the_same_alerts_and_state(unique: str, drift: Drift) -> None:
    """Single events, row envelopes, JSON columns and Arrow: the same alerts (feature, detector, status,
    triggering event: all in alert_id) and byte-identical detector state, with segments and a version switch."""
    traffic = Traffic(numeric=4, categorical=2, seed=5, drifts=(drift,),
                      segments=(SegmentMix.parse("region=eu:0.6,us:0.4"),),
                      versions=(VersionSwitch.parse("3300:v2:0.5"),))  # fmt: skip
    stream = model_events(traffic, 0, clock=itertools.count(T0, 0.01).__next__)
    events = [next(stream) for _ in range(5000)]
    config = settings(unique).model_copy(update={"models": {"fraud": ModelSettings(segments=["region"])}})
    singles, dlq, state, joins = run(config, messages(events, "single", 1), 50)
    assert dlq == [] and any(a["feature"] == drift.feature and a["status"] == "firing" for a in singles)
    assert len(joins) == len(events)
    for form, size, per_batch in (("rows", 250, 3), ("json", 250, 3), ("json", 1000, 1), ("arrow", 250, 3),
                                  ("arrow", 1000, 2), ("arrow", 7, 40), ("producer", 250, 3)):  # fmt: skip
        alerts, dlq, snapshot, stored = run(config, messages(events, form, size), per_batch)
        assert dlq == [], form
        assert [a["alert_id"] for a in alerts] == [a["alert_id"] for a in singles], (form, size)
        assert msgpack_bytes(snapshot) == msgpack_bytes(state), (form, size)
        assert stored == joins, (form, size)  # what a later label joins to: the same bytes


@pytest.mark.parametrize("version", [None, "3", "v" * 40])
@pytest.mark.parametrize("with_prediction", [True, False])
def test_join_data_packed_at_numpy_speed_is_the_same_bytes(version: str | None, with_prediction: bool) -> None:
    rng = np.random.default_rng(1)
    predictions = np.concatenate([rng.normal(size=500), [0.0, -0.0, 1e308, -1e-308, 3.0]])
    times = T0 + rng.random(505) * 1e6
    fast = stored_float_values(version, predictions if with_prediction else None, times)
    slow = [stored_value(JoinData(version, None, float(p) if with_prediction else None, None, float(t)))
            for p, t in zip(predictions.tolist(), times.tolist(), strict=True)]  # fmt: skip
    assert fast == slow


def msgpack_bytes(snapshot: dict[str, Any]) -> bytes:
    import msgpack

    return msgpack.packb(snapshot)


def test_a_bad_row_of_json_columns_goes_to_the_dlq_with_its_index_and_the_rest_goes_on() -> None:
    columns = {
        "event_id": ["a", "b", "c", "d", 7, True, "g", "h"],
        "timestamp": [T0, "2026-12-03T10:00:00Z", "yesterday", None, T0, T0, T0, T0],
        "prediction": [0.5, {"yes": 0.7, "no": 0.3}, 0.2, [1], 0.1, 0.3, 0.2, 0.1],
        "features.x": [1.0, 2, None, 4.5, {"nested": 1}, 2.0, 1.0, 1.0],
        "features.c": ["eu", None, "us", "eu", "eu", "ok", "x" * 2000, "ok"],
        "segment.region": ["eu", "us", None, "eu", "eu", "eu", "eu", 2.5],
    }
    value = orjson.dumps({"model": "m", "model_version": 3, "columns": columns})
    events, block, rejections = decode_events(value, None, LIMITS)
    assert events == [] and block is not None and block.model == "m" and block.model_version == "3"
    found = {(r.index, r.reason) for r in rejections}
    assert found == {(2, "invalid_timestamp"), (3, "invalid_prediction"), (4, "invalid_feature_value"),
                     (5, "invalid_field"), (6, "invalid_feature_value")}  # fmt: skip
    # Each rejected row is the row event it stands for: the row decoder judges it the same way.
    for rejection in rejections:
        element = rejection.element
        assert element["model"] == "m" and "features" in element
        _, again = decode_message(orjson.dumps(element), LIMITS)
        assert again[0].reason == rejection.reason, rejection
    batch = block.batch
    assert len(batch) == 3 and batch.event_ids == ["a", "b", "h"] and batch.versions == ["3", "3", "3"]
    assert batch.timestamps[0] == T0 and batch.timestamps[1] == 1796292000.0
    assert batch.features["x"].numeric()[0].tolist() == [1.0, 2.0, 1.0]
    assert batch.probabilities == [None, {"yes": 0.7, "no": 0.3}, None]
    assert batch.prediction is not None and batch.prediction.coded("categorical")[1] == ["0.5", "yes", "0.1"]
    assert batch.segments == [{"region": "eu"}, {"region": "us"}, {"region": 2.5}]
    assert block.prediction_values() == [0.5, "yes", 0.1]


@pytest.mark.parametrize(("payload", "reason", "detail"), [
    ({"model": "m", "columns": {"features.x": [1, 2], "event_id": ["a"]}}, "invalid_columns", "same length"),
    ({"model": "m", "columns": {"feature.x": [1, 2]}}, "invalid_columns", "unknown column 'feature.x'"),
    ({"model": "m", "columns": {"features.x": 3}}, "invalid_columns", "must be an array"),
    ({"model": "m", "columns": [1, 2]}, "invalid_columns", "JSON object"),
    ({"model": "m", "columns": {"features.x": []}}, "empty_batch", "no rows"),
    ({"model": "", "columns": {"features.x": [1]}}, "invalid_model", "non-empty"),
    ({"model": "m", "columns": {"event_id": ["a"]}}, "invalid_features", "features.NAME"),
    ({"model": "m", "model_version": [1], "columns": {"features.x": [1]}}, "invalid_field", "model_version"),
    ({"model": "m", "columns": {"features.x": [1] * 10_001}}, "batch_too_large", "10001 events"),
])  # fmt: skip
def test_a_malformed_columnar_message_is_rejected_whole_with_a_reason(payload: dict, reason: str, detail: str) -> None:
    events, block, rejections = decode_events(orjson.dumps(payload), None, LIMITS)
    assert events == [] and block is None
    assert [(r.reason, r.index) for r in rejections] == [(reason, None)] and detail in rejections[0].detail
    assert reason in REASONS


def test_arrow_rows_with_non_finite_numbers_or_bad_times_are_rejected_alone() -> None:
    table = {
        "event_id": pa.array(["a", "b", "c", "d", "e"]),
        "timestamp": pa.array([T0, T0, -5.0, None, T0]),
        "prediction": pa.array([0.1, float("inf"), 0.2, 0.3, 0.4]),
        "features.x": pa.array([1.0, 2.0, 3.0, None, float("nan")]),
        "features.n": pa.array([1, None, 3, 4, 5], type=pa.int32()),
        "features.flag": pa.array([None, False, True, True, False]),
        "features.c": pa.array(["b", "a", None, "b", "a"]).dictionary_encode(),
        "segment.region": pa.array(["eu", "us", "eu", None, "eu"]),
    }
    batch = pa.RecordBatch.from_pydict(table).replace_schema_metadata({b"model": b"m"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    block, rejections = decode_arrow(sink.getvalue().to_pybytes(), LIMITS)
    assert [(r.index, r.reason) for r in rejections] == [(1, "invalid_prediction"), (2, "invalid_timestamp"),
                                                         (4, "invalid_feature_value")]  # fmt: skip
    assert rejections[0].element["prediction"] == "inf" and rejections[0].element["features"]["flag"] is False
    assert block is not None and block.model_version is None
    rows = block.batch
    assert rows.event_ids == ["a", "d"] and np.isnan(rows.timestamps[1]) and rows.timestamps[0] == T0
    assert rows.features["x"].numeric()[0].tolist()[0] == 1.0 and np.isnan(rows.features["x"].numeric()[0][1])
    # Integers keep their text for a categorical view; booleans and text keep theirs, first seen first.
    assert rows.features["n"].coded("categorical")[:2][1] == ["1", "4"]
    codes, names, invalid = rows.features["flag"].coded("boolean")
    assert [names[code] if code >= 0 else None for code in codes.tolist()] == [None, "true"] and invalid == 0
    assert rows.features["flag"].json_types().tolist() == [0, 3]
    codes, names, invalid = rows.features["flag"].coded("categorical")
    assert [names[code] if code >= 0 else None for code in codes.tolist()] == [None, "true"] and invalid == 0
    codes, names, invalid = rows.features["c"].coded("categorical")
    assert [names[code] for code in codes.tolist()] == ["b", "b"] and invalid == 0
    assert rows.features["c"].numeric()[1] == 2  # text in a numeric view: invalid, as in JSON
    assert rows.segments == [{"region": "eu"}, None]
    assert block.prediction_values() == [0.1, 0.3]


@pytest.mark.parametrize(("value", "headers", "reason", "detail"), [
    (b"\xff\xff\xff\xffgarbage", None, "invalid_arrow", "not a readable Arrow IPC stream"),
    (b'{"model": "m"}', [("content-type", ARROW_CONTENT_TYPE.encode())], "invalid_arrow", "Arrow"),
])  # fmt: skip
def test_a_message_that_is_not_an_arrow_stream_is_rejected(value: bytes, headers: Any, reason: str,
                                                           detail: str) -> None:  # fmt: skip
    events, block, rejections = decode_events(value, headers, LIMITS)
    assert block is None and events == [] and [(r.reason, r.index) for r in rejections] == [(reason, None)]
    assert detail in rejections[0].detail


def _arrow(arrays: dict[str, pa.Array], metadata: dict[bytes, bytes]) -> bytes:
    batch = pa.RecordBatch.from_pydict(arrays).replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(("arrays", "metadata", "reason", "detail"), [
    ({"features.x": pa.array([1.0])}, {}, "invalid_model", "model must be"),
    ({"features.x": pa.array([[1.0]])}, {b"model": b"m"}, "invalid_columns", "Arrow type list<item: double>"),
    ({"features.x": pa.array([1.0]), "label": pa.array([1])}, {b"model": b"m"}, "invalid_columns", "'label'"),
    ({"features.x": pa.array([], type=pa.float64())}, {b"model": b"m"}, "empty_batch", "no rows"),
    ({"features.x": pa.array([1.0]), "timestamp": pa.array(["now"])}, {b"model": b"m"}, "invalid_timestamp",
     "Arrow type string"),
])  # fmt: skip
def test_a_malformed_arrow_message_is_rejected_whole(arrays: dict, metadata: dict, reason: str, detail: str) -> None:
    block, rejections = decode_arrow(_arrow(arrays, metadata), LIMITS)
    assert block is None and [(r.reason, r.index) for r in rejections] == [(reason, None)]
    assert detail in rejections[0].detail


def test_the_engine_sends_columnar_rejections_to_the_dlq_with_the_row_index(unique: str) -> None:
    value = orjson.dumps({"model": "m", "columns": {"features.x": [1.0, [2], 3.0], "event_id": ["a", "b", "c"]}})
    engine = Engine(settings(unique), MemoryStateStore(), Metrics(CollectorRegistry()), clock=lambda: T0)
    out = asyncio.run(engine.process([Record("events", 0, 0, T0, b"m", value)]))
    ((key, element, headers),) = out.dlq
    named = dict(headers)
    assert named["driftstream-reason"] == b"invalid_feature_value" and named["driftstream-batch-index"] == b"1"
    assert orjson.loads(element) == {"model": "m", "model_version": None, "event_id": "b", "features": {"x": [2]}}
    assert engine.partitions[("events", 0)].monitors["m"].events_seen == 2


def test_a_columnar_batch_of_a_model_over_max_models_goes_to_the_dlq_once_and_whole(unique: str) -> None:
    first = orjson.dumps({"model": "a", "columns": {"features.x": [1.0]}})
    second = orjson.dumps({"model": "b", "columns": {"features.x": [1.0, [2]]}})  # a bad row, and one model too many
    engine = Engine(settings(unique).model_copy(update={"max_models": 1}), MemoryStateStore(),
                    Metrics(CollectorRegistry()), clock=lambda: T0)  # fmt: skip
    records = [Record("events", 0, 0, T0, b"a", first), Record("events", 0, 1, T0, b"b", second)]
    out = asyncio.run(engine.process(records))
    assert [(dict(headers)["driftstream-reason"], value) for _, value, headers in out.dlq] == [
        (b"too_many_models", second)]
    assert out.rejected == ["too_many_models"] * 2  # its rows, as an envelope's are counted
    assert set(engine.partitions[("events", 0)].monitors) == {"a"}


def _stream(batch: pa.RecordBatch, **options: Any) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=pa.ipc.IpcWriteOptions(**options)) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def test_a_corrupt_arrow_string_column_is_rejected_before_it_is_read() -> None:
    """Offsets pointing outside the data would be read out of bounds (a crash, not an exception)."""
    batch = pa.RecordBatch.from_pydict({"features.x": pa.array(["ok", "zz", "ok"])}).replace_schema_metadata(
        {b"model": b"m"})  # fmt: skip
    data = bytearray(_stream(batch))
    at = data.find(np.array([0, 2, 4, 6], np.int32).tobytes())
    data[at : at + 16] = np.array([0, 2, 1_000_000, 6], np.int32).tobytes()
    block, rejections = decode_arrow(bytes(data), LIMITS)
    assert block is None and [(r.reason, r.index) for r in rejections] == [("invalid_arrow", None)]
    assert "out of bounds" in rejections[0].detail


def test_a_compressed_arrow_body_is_refused_before_it_inflates() -> None:
    batch = pa.RecordBatch.from_pydict({"features.x": pa.array(["x" * 1_000_000] * 4)}).replace_schema_metadata(
        {b"model": b"m"})  # fmt: skip
    value = _stream(batch, compression="zstd")
    assert len(value) < 2000  # 4 MB of text
    block, rejections = decode_arrow(value, LIMITS)
    assert block is None and [r.reason for r in rejections] == ["invalid_arrow"]
    assert "compressed" in rejections[0].detail
    assert decode_arrow(_stream(batch), Limits(max_string_length=10**7))[0] is not None  # the same, uncompressed


def test_dlq_copies_that_would_outweigh_the_message_leave_it_whole() -> None:
    """One long value in a dictionary, used by every row: its rows' copies would be rows x its length."""
    indices = pa.array([0] * 2000, type=pa.int32())
    column = pa.DictionaryArray.from_arrays(indices, pa.array(["y" * 100_000]))
    batch = pa.RecordBatch.from_pydict({"features.x": column, "features.n": pa.array(np.arange(2000.0))})
    value = _stream(batch.replace_schema_metadata({b"model": b"m"}))
    block, rejections = decode_arrow(value, LIMITS)
    assert block is None
    assert [(r.reason, r.index, r.element) for r in rejections] == [("invalid_feature_value", None, None)]
    assert rejections[0].detail.startswith("2000 rows rejected, the message kept whole; first, row 0")


@pytest.mark.parametrize(("arrays", "detail"), [
    ({f"features.f{i}": pa.nulls(10_000) for i in range(1100)}, "10000 rows x 1100 columns"),
    ({"features.x": pa.array([1.0] * 3000),
      "prediction": pa.StructArray.from_arrays([pa.nulls(3000)] * 4000, names=[f"c{i}" for i in range(4000)])},
     "3000 rows x 4001 columns"),
    ({"features.x": pa.array([1.0]),
      "prediction": pa.StructArray.from_arrays([pa.nulls(1)] * 1001, names=[f"c{i}" for i in range(1001)])},
     "more than 1000 classes"),
    ({"features.x": pa.array([1.0]), "prediction": pa.StructArray.from_arrays([pa.array([0.5])] * 2, names=["a", "a"])},
     "repeats a class"),
])  # fmt: skip
def test_what_an_arrow_message_decodes_to_stays_proportional_to_its_bytes(arrays: dict, detail: str) -> None:
    block, rejections = decode_arrow(_arrow(arrays, {b"model": b"m"}), Limits(max_message_bytes=10_000_000))
    assert block is None and [r.reason for r in rejections] == ["invalid_columns"] and detail in rejections[0].detail


def test_a_bad_row_beside_nanosecond_timestamps_goes_to_the_dlq_in_unix_seconds() -> None:
    stamps = pa.array([1_764_583_200_123_456_789, 1_764_583_201_000_000_001], type=pa.timestamp("ns", "Europe/Berlin"))
    arrays = {"timestamp": stamps, "features.x": pa.array([1.0, float("nan")])}
    block, rejections = decode_arrow(_arrow(arrays, {b"model": b"m"}), LIMITS)
    assert block is not None and block.batch.timestamps.tolist() == [1764583200.1234567]
    ((rejection,),) = [rejections]
    assert rejection.index == 1 and rejection.element["timestamp"] == 1764583201.0
    assert rejection.element["features"] == {"x": "nan"}


def test_arrow_integers_beyond_a_float_keep_their_text() -> None:
    arrays = {"features.id": pa.array([2**53 + 1, None, 5]), "features.u": pa.array([2**64 - 1, 1, 2], pa.uint64())}
    block, _ = decode_arrow(_arrow(arrays, {b"model": b"m"}), LIMITS)
    assert block is not None
    codes, names, _ = block.batch.features["id"].coded("categorical")
    assert names == ["9007199254740993", "5"]
    assert block.batch.features["u"].coded("categorical")[1] == ["18446744073709551615", "1", "2"]


def test_a_decoder_failure_costs_the_message_not_the_worker(unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever escapes the decoder (a bug) rejects its message whole; the next message goes on."""
    import streams.columnar

    def broken(array: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a decoder bug")

    monkeypatch.setattr(streams.columnar, "_arrow_feature", broken)
    arrow = _arrow({"features.x": pa.array([1.0])}, {b"model": b"m"})
    good = orjson.dumps({"model": "m", "features": {"x": 1.0}})
    engine = Engine(settings(unique), MemoryStateStore(), Metrics(CollectorRegistry()), clock=lambda: T0)
    out = asyncio.run(engine.process([Record("events", 0, 0, T0, b"m", arrow), Record("events", 0, 1, T0, b"m", good)]))
    ((_, value, headers),) = out.dlq
    assert value == arrow and dict(headers)["driftstream-reason"] == b"invalid_arrow"
    assert b"a decoder bug" in dict(headers)["driftstream-detail"]
    assert engine.partitions[("events", 0)].monitors["m"].events_seen == 1
