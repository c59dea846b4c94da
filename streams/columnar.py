"""Decoding of columnar envelopes: one model's events as columns, in JSON or as an Arrow IPC stream.

A columnar message decodes straight to the typed columns the monitors take (``ModelBatch``), with no
``Event`` per row. Validation keeps the meaning it has for row events: each row is judged on its own
(a value of the wrong JSON type, an over-long string, a non-finite number, a bad timestamp), a bad
row goes to the DLQ as the row event it stands for, with its index and reason, and the good rows go
on; a message whose shape is wrong (columns of unequal length, an unknown column, no model) is
rejected whole. Shapes: ``../shared/CONTRACT.md`` "Columnar batch"; docs/columnar.md.

Values are checked a column at a time: the set of a column's Python types (one pass in C) says
whether any row needs a closer look, so clean columns cost no Python loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from detectors.columns import Column
from detectors.monitors import ModelBatch
from streams.decode import (
    Event,
    Invalid,
    Limits,
    Rejection,
    _probabilities,
    _reencodable,
    _shown,
    decode_payload,
    load_json,
    parse_timestamp,
)

ARROW_CONTENT_TYPE = "application/vnd.apache.arrow.stream"
_ARROW_MAGIC = b"\xff\xff\xff\xff"  # an IPC stream's first message starts with the continuation marker
FEATURE_PREFIX, SEGMENT_PREFIX = "features.", "segment."
_ROW_COLUMNS = ("event_id", "timestamp", "prediction")
_MAX_SECONDS = 1e11  # as for row events: beyond it (or before 1970) a timestamp is a unit or parsing mistake
_NUMBERS = frozenset({int, float, type(None)})
_TEXTS = frozenset({str, type(None)})
_SCALARS = frozenset({int, float, str, bool, type(None)})


@dataclass
class ColumnarBatch:
    """The accepted rows of one columnar message of one model."""

    model: str
    model_version: str | None
    batch: ModelBatch  # timestamps NaN where the row has none: the record's time fills them
    # The prediction of each row as sent (a number or a class; None for none), built on demand for the join
    # store: only rows with an event id need it.
    predictions: Any
    # The predictions as float64 when every row's is a float (what the join store packs fastest), else None.
    float_predictions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.batch)

    def prediction_values(self) -> list[Any]:
        values = self.predictions
        if callable(values):
            values = self.predictions = values()
        return values


def is_arrow(value: bytes, headers: Any) -> bool:
    """Whether a message is an Arrow stream: its ``content-type`` header says so, or (a producer that
    sets no headers) its first bytes do; JSON never starts with them."""
    for name, content in (headers.items() if isinstance(headers, dict) else headers or ()):
        name = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        if name.lower() == "content-type":
            text = content.decode("latin-1") if isinstance(content, bytes) else str(content)
            if text.split(";")[0].strip().lower() == ARROW_CONTENT_TYPE:
                return True
    return value[:4] == _ARROW_MAGIC


def decode_events(value: bytes | None, headers: Any, limits: Limits
                  ) -> tuple[list[Event], ColumnarBatch | None, list[Rejection]]:  # fmt: skip
    """A message of the events topic in any of its forms: an event, an array of events (row events),
    a JSON object of ``columns`` or an Arrow stream (a columnar batch)."""
    if value is not None and is_arrow(value, headers):
        block, rejections = decode_arrow(value, limits)
        return [], block, rejections
    payload, rejection = load_json(value, limits)
    if rejection is not None:
        return [], None, [rejection]
    if type(payload) is dict and "columns" in payload and "features" not in payload:
        block, rejections = decode_json_columns(payload, limits)
        return [], block, rejections
    events, rejections = decode_payload(payload, limits)
    return events, None, rejections


def decode_json_columns(payload: dict[str, Any], limits: Limits) -> tuple[ColumnarBatch | None, list[Rejection]]:
    """A decoded JSON object with ``columns``: its accepted rows and the rejections of the others."""
    try:
        model, version = _header(payload.get("model"), payload.get("model_version"), limits)
        columns = payload.get("columns")
        if type(columns) is not dict:
            raise Invalid("invalid_columns", "columns must be a JSON object of column name -> array")
        size = _size(columns, limits)
        features, segments, rows = _names(columns, limits)
        _check_cells(size, len(columns), limits)
    except Invalid as exc:
        return None, [Rejection(exc.reason, exc.detail, None)]
    bad: dict[int, tuple[str, str]] = {}  # row -> (reason, detail): the first fault found in it
    # A row's first fault is the one reported, in the order the row decoder checks an event's fields.
    for name, values in features.items():
        _check_feature(name, values, limits, bad)
    predictions, probabilities = _predictions(rows.get("prediction"), limits, bad)
    event_ids = _event_ids(rows.get("event_id"), size, limits, bad)
    timestamps = _timestamps(rows.get("timestamp"), size, bad)
    for key, values in segments.items():
        _check_segment(key, values, limits, bad)
    rejections = [Rejection(reason, detail, row, _json_row(model, version, columns, row))
                  for row, (reason, detail) in sorted(bad.items())]  # fmt: skip
    if rejections:  # a JSON row's copy is no larger than its part of the message; bounded all the same
        rejections = _bounded(rejections, limits.max_message_bytes)
    keep = None
    if bad:
        if len(bad) == size:
            return None, rejections
        keep = [row for row in range(size) if row not in bad]
        features = {name: [values[i] for i in keep] for name, values in features.items()}
        segments = {key: [values[i] for i in keep] for key, values in segments.items()}
        event_ids = None if event_ids is None else [event_ids[i] for i in keep]
        timestamps = timestamps[keep]
        predictions = None if predictions is None else [predictions[i] for i in keep]
        probabilities = None if probabilities is None else [probabilities[i] for i in keep]
    n = size - len(bad)
    batch = ModelBatch(
        {name: Column.from_values(values) for name, values in features.items()},
        timestamps,
        prediction=None if predictions is None else Column.from_values(predictions),
        versions=None if version is None else [version] * n,
        segments=_segment_rows(segments, n),
        event_ids=event_ids if event_ids is not None else [None] * n,
        probabilities=probabilities if probabilities is not None else [None] * n,
    )
    floats = None
    if predictions is not None and set(map(type, predictions)) == {float}:
        floats = np.array(predictions, dtype=np.float64)
    block = ColumnarBatch(model, version, batch, predictions if predictions is not None else [None] * n, floats)
    return block, rejections


def decode_arrow(value: bytes, limits: Limits) -> tuple[ColumnarBatch | None, list[Rejection]]:
    """An Arrow IPC stream of one record batch (or more, taken together): accepted rows and rejections."""
    if len(value) > limits.max_message_bytes:
        detail = f"{len(value)} bytes > max_message_bytes {limits.max_message_bytes}"
        return None, [Rejection("message_too_large", detail, None)]
    try:
        buffer = pa.py_buffer(value)
        _check_uncompressed(buffer)
        with pa.ipc.open_stream(buffer) as reader:
            table = reader.read_all()
        # Offsets, UTF-8 and dictionary indices checked before anything reads them: a corrupt string
        # column would otherwise be read out of bounds.
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        return None, [Rejection("invalid_arrow", f"not a readable Arrow IPC stream: {str(exc)[:200]}", None)]
    try:
        metadata = table.schema.metadata or {}
        model, version = _header(_text(metadata.get(b"model")), _text(metadata.get(b"model_version")), limits)
        if table.num_rows == 0:
            raise Invalid("empty_batch", "the record batch has no rows")
        if table.num_rows > limits.max_events_per_message:
            raise Invalid("batch_too_large", f"{table.num_rows} events > max_events_per_message "
                          f"{limits.max_events_per_message}")  # fmt: skip
        if len(set(table.column_names)) != table.num_columns:
            raise Invalid("invalid_columns", "column names repeat")
        features, segments, rows = _names({name: None for name in table.column_names}, limits)
        _check_cells(table.num_rows, _arrow_width(table), limits)
        table = table.combine_chunks()
    except Invalid as exc:
        return None, [Rejection(exc.reason, exc.detail, None)]
    size = table.num_rows
    bad: dict[int, tuple[str, str]] = {}
    try:
        typed = {name: _arrow_feature(name, table.column(FEATURE_PREFIX + name).chunk(0), limits, bad)
                 for name in features}  # fmt: skip
        prediction: Column | None = None
        probabilities: list[dict[str, float] | None] | None = None
        prediction_array = table.column("prediction").chunk(0) if "prediction" in rows else None
        if prediction_array is not None:
            if pa.types.is_struct(prediction_array.type):  # class -> probability; a null field: a class not sent
                listed, probabilities = _predictions(_probability_rows(prediction_array, limits), limits, bad)
                prediction = None if listed is None else Column.from_values(listed)
            elif prediction_array.null_count < len(prediction_array):  # else: no prediction, as in JSON
                prediction = _arrow_feature("prediction", prediction_array, limits, bad, "invalid_prediction")
        event_ids = None
        if "event_id" in rows:
            listed = _arrow_list(table.column("event_id").chunk(0), "event_id", "invalid_field", limits, bad)
            event_ids = _event_ids(listed, size, limits, bad)
        timestamps = np.full(size, np.nan)
        if "timestamp" in rows:
            timestamps = _arrow_timestamps(table.column("timestamp").chunk(0), bad)
        segment_values = {key: _arrow_segment(key, table.column(SEGMENT_PREFIX + key).chunk(0), limits, bad)
                          for key in segments}  # fmt: skip
    except Invalid as exc:
        return None, [Rejection(exc.reason, exc.detail, None)]
    rejections = _arrow_rejections(model, version, table, timestamps, bad, max(len(value), limits.max_message_bytes))
    if len(bad) == size:
        return None, rejections
    segment_lists = segment_values
    if bad:
        keep = np.array([row for row in range(size) if row not in bad], dtype=np.int64)
        typed = {name: column.take(keep) for name, column in typed.items()}
        segment_lists = {key: [values[i] for i in keep.tolist()] for key, values in segment_lists.items()}
        event_ids = None if event_ids is None else [event_ids[i] for i in keep.tolist()]
        timestamps = timestamps[keep]
        prediction = None if prediction is None else prediction.take(keep)
        probabilities = None if probabilities is None else [probabilities[i] for i in keep.tolist()]
        if prediction_array is not None:
            prediction_array = prediction_array.take(pa.array(keep))
    n = size - len(bad)
    batch = ModelBatch(
        typed,
        timestamps,
        prediction=prediction,
        versions=None if version is None else [version] * n,
        segments=_segment_rows(segment_lists, n),
        event_ids=event_ids if event_ids is not None else [None] * n,
        probabilities=probabilities if probabilities is not None else [None] * n,
    )

    def predictions() -> list[Any]:
        if prediction_array is None:
            return [None] * n
        if probabilities is not None:  # the top class of each row, as the row path keeps it
            return [None if p is None else max(p, key=p.__getitem__) for p in probabilities]
        return prediction_array.to_pylist()

    floats = None
    if prediction is not None and prediction_array is not None and pa.types.is_floating(prediction_array.type):
        values = prediction.numeric()[0]
        floats = None if np.isnan(values).any() else values
    return ColumnarBatch(model, version, batch, predictions, floats), rejections


# -- the message as a whole --------------------------------------------------------------------------


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise Invalid("invalid_model", "schema metadata must be UTF-8 text") from exc


def _header(model: Any, version: Any, limits: Limits) -> tuple[str, str | None]:
    if type(model) is not str or not model or len(model) > limits.max_name_length:
        raise Invalid("invalid_model", "model must be a non-empty string of at most "
                      f"{limits.max_name_length} characters")  # fmt: skip
    if version is None:
        return model, None
    if type(version) is not str and type(version) is not int:
        raise Invalid("invalid_field", f"model_version must be a string, got {type(version).__name__}")
    text = str(version)
    if len(text) > limits.max_string_length:
        raise Invalid("invalid_field", f"model_version longer than {limits.max_string_length} characters")
    return model, text


def _size(columns: dict[str, Any], limits: Limits) -> int:
    sizes = set()
    for name, values in columns.items():
        if type(values) is not list:
            raise Invalid("invalid_columns", f"column {_shown(name)} must be an array")
        sizes.add(len(values))
    if len(sizes) > 1:
        raise Invalid("invalid_columns", f"columns must have the same length, got lengths {sorted(sizes)[:5]}")
    size = sizes.pop() if sizes else 0
    if size == 0:
        raise Invalid("empty_batch", "columnar envelope has no rows")
    if size > limits.max_events_per_message:
        raise Invalid("batch_too_large", f"{size} events > max_events_per_message {limits.max_events_per_message}")
    return size


def _names(columns: dict[str, Any], limits: Limits) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Feature, segment and per-row columns by their names (without prefixes); an unknown name rejects
    the message (a misspelt prefix would otherwise drop a feature silently)."""
    features: dict[str, Any] = {}
    segments: dict[str, Any] = {}
    rows: dict[str, Any] = {}
    for name, values in columns.items():
        if name.startswith(FEATURE_PREFIX):
            feature = name[len(FEATURE_PREFIX):]
            if not feature or len(feature) > limits.max_name_length:
                raise Invalid("invalid_features", f"feature names must have 1 to {limits.max_name_length} characters")
            features[feature] = values
        elif name.startswith(SEGMENT_PREFIX):
            key = name[len(SEGMENT_PREFIX):]
            if not key or len(key) > limits.max_segment_length:
                raise Invalid("invalid_segment", f"segment keys must have 1 to {limits.max_segment_length} characters")
            segments[key] = values
        elif name in _ROW_COLUMNS:
            rows[name] = values
        else:
            raise Invalid("invalid_columns", f"unknown column {_shown(name)}: columns are event_id, timestamp, "
                          "prediction, features.NAME and segment.KEY")  # fmt: skip
    if not features:
        raise Invalid("invalid_features", "a columnar envelope needs at least one features.NAME column")
    if len(segments) > limits.max_segment_keys:
        raise Invalid("invalid_segment", f"segment has {len(segments)} keys > max_segment_keys "
                      f"{limits.max_segment_keys}")  # fmt: skip
    return features, segments, rows


# -- JSON columns, a column at a time ----------------------------------------------------------------


def _reject(bad: dict[int, tuple[str, str]], row: int, reason: str, detail: str) -> None:
    bad.setdefault(row, (reason, detail))


def _check_feature(name: str, values: list[Any], limits: Limits, bad: dict[int, tuple[str, str]]) -> None:
    types = set(map(type, values))
    if types <= _NUMBERS:
        return
    if types <= _SCALARS and (str not in types or _longest(values) <= limits.max_string_length):
        return
    for row, value in enumerate(values):
        if type(value) not in _SCALARS:
            _reject(bad, row, "invalid_feature_value", f"{_shown(name)} must be a number, string, boolean or null")
        elif type(value) is str and len(value) > limits.max_string_length:
            _reject(bad, row, "invalid_feature_value", f"{_shown(name)} longer than {limits.max_string_length} "
                    "characters")  # fmt: skip


def _longest(values: list[Any]) -> int:
    """Length of the longest string (the column holds only scalars)."""
    try:  # text and nulls (the common case): in C
        return max(map(len, filter(None, values)), default=0)
    except TypeError:  # numbers or booleans too
        return max(map(len, (value for value in values if type(value) is str)), default=0)


def _check_segment(key: str, values: list[Any], limits: Limits, bad: dict[int, tuple[str, str]]) -> None:
    types = set(map(type, values))
    if types <= _SCALARS and (str not in types or _longest(values) <= limits.max_segment_length):
        return
    for row, value in enumerate(values):
        if type(value) is str:
            if len(value) > limits.max_segment_length:
                _reject(bad, row, "invalid_segment", f"segment {_shown(key)} longer than {limits.max_segment_length} "
                        "characters")  # fmt: skip
        elif type(value) not in _SCALARS:
            _reject(bad, row, "invalid_segment", f"segment {_shown(key)} must be a string, number or boolean")


def _segment_rows(segments: dict[str, list[Any]], n: int) -> list[dict[str, Any] | None] | None:
    """Each row's segment object (its non-null keys), as a row event carries it; None without segments."""
    if not segments:
        return None
    keys = list(segments)
    return [{key: value for key, value in zip(keys, values, strict=True) if value is not None} or None
            for values in zip(*segments.values(), strict=True)]  # fmt: skip


def _event_ids(values: list[Any] | None, size: int, limits: Limits, bad: dict[int, tuple[str, str]]
               ) -> list[str | None] | None:  # fmt: skip
    if values is None:
        return None
    types = set(map(type, values))
    if types <= _TEXTS and _longest(values) <= limits.max_string_length:
        return values
    ids: list[str | None] = []
    for row, value in enumerate(values):
        if value is None or type(value) is str or type(value) is int:
            text = None if value is None else str(value)
            if text is not None and len(text) > limits.max_string_length:
                _reject(bad, row, "invalid_field", f"event_id longer than {limits.max_string_length} characters")
            ids.append(text)
        else:
            _reject(bad, row, "invalid_field", f"event_id must be a string, got {type(value).__name__}")
            ids.append(None)
    return ids


def _timestamps(values: list[Any] | None, size: int, bad: dict[int, tuple[str, str]]) -> np.ndarray:
    """Unix seconds of each row, NaN where it has none (the record's time is used)."""
    if values is None:
        return np.full(size, np.nan)
    if set(map(type, values)) <= _NUMBERS:
        seconds = np.array([np.nan if value is None else value for value in values], dtype=np.float64)
        for row in np.flatnonzero(~((seconds >= 0) & (seconds < _MAX_SECONDS)) & ~np.isnan(seconds)).tolist():
            _reject(bad, row, "invalid_timestamp", f"timestamp {values[row]} is not plausible Unix seconds")
        return seconds
    seconds = np.full(size, np.nan)
    for row, value in enumerate(values):
        try:
            parsed = parse_timestamp(value)
        except Invalid as exc:
            _reject(bad, row, exc.reason, exc.detail)
        else:
            if parsed is not None:
                seconds[row] = parsed
    return seconds


def _predictions(values: list[Any] | None, limits: Limits, bad: dict[int, tuple[str, str]]
                 ) -> tuple[list[Any] | None, list[dict[str, float] | None] | None]:  # fmt: skip
    """Each row's prediction (the top class of a probabilities object) and, when any row sent an object,
    each row's probabilities."""
    if values is None or all(value is None for value in values):
        return None, None
    types = set(map(type, values))
    if types <= _SCALARS and (str not in types or _longest(values) <= limits.max_string_length):
        return values, None
    predictions: list[Any] = []
    probabilities: list[dict[str, float] | None] | None = None
    for row, value in enumerate(values):
        kind = type(value)
        if kind is dict:
            if probabilities is None:
                probabilities = [None] * row
            try:
                classes = _probabilities(value, limits)
            except Invalid as exc:
                _reject(bad, row, exc.reason, exc.detail)
                predictions.append(None)
                probabilities.append(None)
                continue
            predictions.append(max(classes, key=classes.__getitem__))
            probabilities.append(classes)
            continue
        if kind not in _SCALARS:
            _reject(bad, row, "invalid_prediction", "prediction must be a number, string or object")
        elif kind is str and len(value) > limits.max_string_length:
            _reject(bad, row, "invalid_prediction", f"'prediction' longer than {limits.max_string_length} characters")
        predictions.append(value if kind in _SCALARS else None)
        if probabilities is not None:
            probabilities.append(None)
    return predictions, probabilities


def _json_row(model: str, version: str | None, columns: dict[str, list[Any]], row: int) -> dict[str, Any]:
    """A rejected row as the row event it stands for (what the DLQ holds)."""
    event: dict[str, Any] = {"model": model, "model_version": version, "features": {}}
    segment: dict[str, Any] = {}
    for name, values in columns.items():
        value = values[row]
        if name.startswith(FEATURE_PREFIX):
            event["features"][name[len(FEATURE_PREFIX):]] = value
        elif name.startswith(SEGMENT_PREFIX):
            if value is not None:
                segment[name[len(SEGMENT_PREFIX):]] = value
        else:
            event[name] = value
    if segment:
        event["segment"] = segment
    return _reencodable(event)


# -- Arrow columns -------------------------------------------------------------------------------------


def _arrow_feature(name: str, array: pa.Array, limits: Limits, bad: dict[int, tuple[str, str]],
                   reason: str = "invalid_feature_value") -> Column:  # fmt: skip
    """A typed column from an Arrow array: numbers as float64 (NaN missing), text and booleans as codes
    in order of first appearance (as the row path factorizes them)."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = _decoded(array, limits.max_string_length, bad, reason, f"{_shown(name)} longer than "
                         f"{limits.max_string_length} characters")  # fmt: skip
        kind = array.type
    if pa.types.is_null(kind):
        return Column.from_numbers(np.full(len(array), np.nan))
    if pa.types.is_integer(kind) and array.null_count < len(array):
        low, high = pc.min_max(array).values()
        if high.as_py() > 2**53 or low.as_py() < -(2**53):  # integers a float cannot hold: as sent, as in JSON
            return Column.from_values(array.to_pylist())
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = array.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        if pa.types.is_floating(kind):
            present = ~np.asarray(array.is_null(nan_is_null=False))
            values = np.where(present, values, np.nan)  # a null's slot may hold any number
            for row in np.flatnonzero(present & ~np.isfinite(values)).tolist():
                _reject(bad, row, reason, f"{_shown(name)} is not finite ({values[row]})")
        elif array.null_count:
            values = np.where(np.asarray(array.is_null()), np.nan, values)
        return Column.from_numbers(values, integral=pa.types.is_integer(kind))
    if pa.types.is_boolean(kind):
        true = np.asarray(array.fill_null(False), dtype=np.bool_)
        present = ~np.asarray(array.is_null())
        codes = np.full(len(array), -1, dtype=np.int64)
        rows = {label: present & (true == (label == "true")) for label in ("true", "false")}
        names = sorted((label for label in rows if rows[label].any()), key=lambda label: int(rows[label].argmax()))
        for code, label in enumerate(names):  # in order of first appearance
            codes[rows[label]] = code
        return Column.from_codes(codes, names, kind="boolean")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        encoded = pc.dictionary_encode(array)
        names = encoded.dictionary.to_pylist()
        codes = np.asarray(encoded.indices.fill_null(-1), dtype=np.int64)
        lengths = np.asarray(pc.utf8_length(encoded.dictionary))
        too_long = np.flatnonzero(lengths > limits.max_string_length)
        if too_long.size:
            for row in np.flatnonzero(np.isin(codes, too_long)).tolist():
                _reject(bad, row, reason, f"{_shown(name)} longer than {limits.max_string_length} characters")
        return Column.from_codes(codes, names)
    raise Invalid("invalid_columns", f"column {_shown(name)} has Arrow type {kind}: a feature or prediction is a "
                  "number, string or boolean column")  # fmt: skip


def _decoded(array: pa.DictionaryArray, limit: int, bad: dict[int, tuple[str, str]], reason: str, detail: str
             ) -> pa.Array:  # fmt: skip
    """A dictionary array as plain values, its text over ``limit`` characters first emptied (their rows
    rejected): decoded whole, one long value used by every row would cost rows x its length."""
    values = array.dictionary
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        long = np.asarray(pc.greater(pc.utf8_length(values), limit).fill_null(False))
        if long.any():
            indices = np.asarray(array.indices.fill_null(-1).cast(pa.int64()))
            for row in np.flatnonzero(np.isin(indices, np.flatnonzero(long))).tolist():
                _reject(bad, row, reason, detail)
            values = pc.if_else(pa.array(long), pa.scalar("", values.type), values)
            array = pa.DictionaryArray.from_arrays(array.indices, values)
    return array.dictionary_decode()


def _arrow_segment(key: str, array: pa.Array, limits: Limits, bad: dict[int, tuple[str, str]]) -> list[Any]:
    kind = array.type.value_type if pa.types.is_dictionary(array.type) else array.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):  # fmt: skip
        raise Invalid("invalid_segment", f"segment column {_shown(key)} has Arrow type {kind}: a segment value is a "
                      "string, number or boolean")  # fmt: skip
    if pa.types.is_dictionary(array.type):
        array = _decoded(array, limits.max_segment_length, bad, "invalid_segment", f"segment {_shown(key)} longer "
                         f"than {limits.max_segment_length} characters")  # fmt: skip
    values = array.to_pylist()
    for row, value in enumerate(values):
        if type(value) is float and not math.isfinite(value):
            _reject(bad, row, "invalid_segment", f"segment {_shown(key)} must be a string, number or boolean")
        elif type(value) is str and len(value) > limits.max_segment_length:
            _reject(bad, row, "invalid_segment", f"segment {_shown(key)} longer than {limits.max_segment_length} "
                    "characters")  # fmt: skip
    return values


def _arrow_list(array: pa.Array, name: str, reason: str, limits: Limits, bad: dict[int, tuple[str, str]]
                ) -> list[Any]:  # fmt: skip
    kind = array.type.value_type if pa.types.is_dictionary(array.type) else array.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or pa.types.is_null(kind)):  # fmt: skip
        raise Invalid(reason, f"{name} column has Arrow type {kind}: it must be text (or integers)")
    if pa.types.is_dictionary(array.type):
        array = _decoded(array, limits.max_string_length, bad, reason, f"{name} longer than "
                         f"{limits.max_string_length} characters")  # fmt: skip
    return array.to_pylist()


def _arrow_timestamps(array: pa.Array, bad: dict[int, tuple[str, str]]) -> np.ndarray:
    kind = array.type
    if pa.types.is_timestamp(kind):
        per_second = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[kind.unit]
        seconds = array.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / per_second
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        seconds = array.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    elif pa.types.is_null(kind):
        return np.full(len(array), np.nan)
    else:
        raise Invalid("invalid_timestamp", f"timestamp column has Arrow type {kind}: it must be Unix seconds or an "
                      "Arrow timestamp")  # fmt: skip
    missing = np.asarray(array.is_null())
    seconds = np.where(missing, np.nan, seconds)
    for row in np.flatnonzero(~missing & ~((seconds >= 0) & (seconds < _MAX_SECONDS))).tolist():
        _reject(bad, row, "invalid_timestamp", f"timestamp {seconds[row]} is not plausible Unix seconds")
    return seconds


def _arrow_rejections(model: str, version: str | None, table: pa.Table, timestamps: np.ndarray,
                      bad: dict[int, tuple[str, str]], budget: int) -> list[Rejection]:  # fmt: skip
    """The rejected rows as the row events they stand for: timestamps as the Unix seconds decoded (an
    Arrow timestamp may not fit a datetime), non-finite numbers as their text (JSON has none), a struct
    prediction without its null fields. Converted a chunk at a time, and no further than ``budget``
    bytes of copies (an Arrow dictionary may repeat one long value in every row): past it, the message
    whole (``_bounded``)."""
    if not bad:
        return []
    rows = sorted(bad)
    rejections: list[Rejection] = []
    size = 0
    struct = "prediction" in table.column_names and pa.types.is_struct(table.column("prediction").type)
    for start in range(0, len(rows), 256):
        chunk = rows[start : start + 256]
        taken = table.take(pa.array(chunk, type=pa.int64()))
        if "timestamp" in taken.column_names:
            taken = taken.drop_columns(["timestamp"])
        columns = {name: [_plain(value) for value in taken.column(name).to_pylist()] for name in taken.column_names}
        if "timestamp" in table.column_names:
            columns["timestamp"] = [None if math.isnan(seconds) else seconds for seconds in timestamps[chunk].tolist()]
        if struct:
            columns["prediction"] = [None if row is None else {name: p for name, p in row.items() if p is not None}
                                     for row in columns["prediction"]]  # fmt: skip
        for i, row in enumerate(chunk):
            reason, detail = bad[row]
            element = _json_row(model, version, columns, i)
            size += len(orjson.dumps(element))
            rejections.append(Rejection(reason, detail, row, element))
            if size > budget:
                return _whole(rejections[0], len(bad))
    return rejections


def _plain(value: Any) -> Any:
    if type(value) is float and not math.isfinite(value):
        return repr(value)
    return value


def _bounded(rejections: list[Rejection], budget: int) -> list[Rejection]:
    """The rows' DLQ copies, or, when together they pass ``budget`` bytes, the message whole (``_whole``)."""
    total = 0
    for rejection in rejections:
        total += len(orjson.dumps(rejection.element))
        if total > budget:
            return _whole(rejections[0], len(rejections))
    return rejections


def _whole(first: Rejection, rows: int) -> list[Rejection]:
    """The message itself, once, for the DLQ, naming its first bad row: its rows' copies would outweigh it."""
    detail = f"{rows} rows rejected, the message kept whole; first, row {first.index}: {first.detail}"
    return [Rejection(first.reason, detail[:1000], None)]


def _check_cells(rows: int, columns: int, limits: Limits) -> None:
    """At most one value per byte a message may have: what is decoded stays proportional to what was sent
    (Arrow sends a column of nulls, or a struct of many fields, in a few bytes)."""
    if rows * columns > limits.max_message_bytes:
        raise Invalid("invalid_columns", f"{rows} rows x {columns} columns is over {limits.max_message_bytes} values "
                      "(max_message_bytes)")  # fmt: skip


def _arrow_width(table: pa.Table) -> int:
    """Columns, a struct counted by its fields."""
    return sum(max(1, field.type.num_fields) if pa.types.is_struct(field.type) else 1 for field in table.schema)


def _probability_rows(array: pa.StructArray, limits: Limits) -> list[dict[str, Any] | None]:
    """Each row's class -> probability object of a struct prediction (null fields: classes not sent)."""
    kind = array.type
    names = [kind.field(i).name for i in range(kind.num_fields)]
    if len(set(names)) != len(names):
        raise Invalid("invalid_columns", "the prediction struct repeats a class")
    if len(names) > limits.max_classes:
        raise Invalid("invalid_columns", f"the prediction struct has more than {limits.max_classes} classes")
    for i in range(kind.num_fields):
        field = kind.field(i).type
        if not (pa.types.is_floating(field) or pa.types.is_integer(field) or pa.types.is_null(field)):
            raise Invalid("invalid_columns", f"the prediction struct's class {_shown(names[i])} has Arrow type "
                          f"{field}: probabilities are numbers")  # fmt: skip
    return [None if row is None else {name: p for name, p in row.items() if p is not None}
            for row in array.to_pylist()]  # fmt: skip


def _check_uncompressed(buffer: pa.Buffer) -> None:
    """Refuse record batches with compressed bodies: a few kilobytes of zstd may inflate to gigabytes
    before any size check can see them (the contract's messages are uncompressed; Kafka compresses).

    pyarrow tells nothing of a message's compression, so this reads the flatbuffer of each message's
    metadata (format/Message.fbs): Message.header (field 2) -> RecordBatch (or DictionaryBatch.data,
    field 1) -> compression (field 3)."""
    reader = pa.ipc.MessageReader.open_stream(buffer)
    for message in reader:
        if message.type not in ("record batch", "dictionary"):
            continue
        meta = message.metadata.to_pybytes()
        header = _fb_field_table(meta, _fb_root(meta), 2)
        if header is not None and message.type == "dictionary":
            header = _fb_field_table(meta, header, 1)
        if header is None:
            raise ValueError(f"a {message.type} message without its header")
        if _fb_field_table(meta, header, 3) is not None:
            raise ValueError("compressed record batches are not read (send the body uncompressed)")


def _fb_root(data: bytes) -> int:
    return int.from_bytes(data[0:4], "little")


def _fb_field_table(data: bytes, table: int, field: int) -> int | None:
    """Position of the sub-table in ``field`` of the flatbuffer table at ``table``, None when absent."""
    vtable = table - int.from_bytes(data[table : table + 4], "little", signed=True)
    vtable_size = int.from_bytes(data[vtable : vtable + 2], "little")
    entry = 4 + 2 * field
    if entry + 2 > vtable_size:
        return None
    offset = int.from_bytes(data[vtable + entry : vtable + entry + 2], "little")
    if not offset:
        return None
    at = table + offset
    return at + int.from_bytes(data[at : at + 4], "little")
