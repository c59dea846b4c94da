"""Decoding and validation of inference and label messages, a message at a time.

One message is one event (or label) or a JSON array of them (the batch envelope).
Each element is judged on its own: a bad element is rejected with a reason, the
good ones beside it go on. Reasons form a fixed set so they can label a metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

REASONS = (
    "message_too_large",
    "invalid_json",
    "empty_batch",
    "batch_too_large",
    "not_an_object",
    "invalid_model",
    "invalid_features",
    "invalid_feature_value",
    "invalid_timestamp",
    "invalid_prediction",
    "invalid_segment",
    "invalid_field",
    "too_many_models",
    "invalid_event_id",
    "invalid_label",
    "invalid_alert",  # a message of the alert topic the retrain policy reads
    "invalid_columns",  # a columnar envelope's shape: unequal lengths, an unknown column, a column type
    "invalid_arrow",  # not a readable Arrow IPC stream
)

_SCALARS = (str, int, float, bool, type(None))
_MAX_SECONDS = 1e11  # year 5138: beyond it (or before 1970) a timestamp is a unit or parsing mistake


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 10 * 1024 * 1024
    max_events_per_message: int = 10_000
    max_name_length: int = 200
    max_string_length: int = 1024
    max_segment_keys: int = 8
    max_segment_length: int = 64
    max_classes: int = 1000  # classes of a prediction object


@dataclass(frozen=True, slots=True)
class Event:
    model: str
    model_version: str | None
    event_id: str | None
    timestamp: float | None  # Unix seconds; None: use the Kafka record's
    features: dict[str, Any]
    prediction: Any  # a number, a class, or the top class of ``probabilities``
    segment: dict[str, str | int | float | bool] | None = None
    probabilities: dict[str, float] | None = None  # class -> probability, as sent


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # one of REASONS
    detail: str
    index: int | None = None  # position in a batch envelope; None for the whole message
    # The rejected element of a batch envelope, as decoded (or, when nested too deep for
    # orjson.dumps, its JSON as an orjson.Fragment): orjson.dumps re-encodes it for the DLQ.
    element: Any = None


class Label(NamedTuple):
    """The true outcome of one earlier prediction, joined to it by (model, event_id).

    A named tuple, not a dataclass: labels come by the ten thousand a second and a tuple is
    built several times faster."""

    model: str
    event_id: str
    label: str | int | float | bool  # a class (text, integer, boolean) or a number (regression)
    timestamp: float | None  # Unix seconds; None: use the Kafka record's


class Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode_message(value: bytes | None, limits: Limits) -> tuple[list[Event], list[Rejection]]:
    """Valid events of one message and the rejections of the rest."""
    return _decode(value, limits, parse_event)


def decode_labels(value: bytes | None, limits: Limits) -> tuple[list[Label], list[Rejection]]:
    """Valid labels of one label message and the rejections of the rest."""
    return _decode(value, limits, parse_label)


def load_json(value: bytes | None, limits: Limits) -> tuple[Any, Rejection | None]:
    """The decoded JSON of a message, or why the message as a whole is rejected."""
    if value is None:
        return None, Rejection("invalid_json", "message has no value", None)
    if len(value) > limits.max_message_bytes:
        detail = f"{len(value)} bytes > max_message_bytes {limits.max_message_bytes}"
        return None, Rejection("message_too_large", detail, None)
    try:
        return orjson.loads(value), None
    except orjson.JSONDecodeError as exc:
        return None, Rejection("invalid_json", str(exc), None)


def _decode(value: bytes | None, limits: Limits, parse: Any) -> tuple[list[Any], list[Rejection]]:
    payload, rejection = load_json(value, limits)
    if rejection is not None:
        return [], [rejection]
    return decode_payload(payload, limits, parse)


def decode_payload(payload: Any, limits: Limits, parse: Any = None) -> tuple[list[Any], list[Rejection]]:
    """The valid elements of a decoded message (one element or an array of them) and the rejections
    of the rest; ``parse``: ``parse_event`` (default) or ``parse_label``."""
    parse = parse_event if parse is None else parse
    if not isinstance(payload, list):
        try:
            return [parse(payload, limits)], []
        except Invalid as exc:
            return [], [Rejection(exc.reason, exc.detail, None)]
    if not payload:
        return [], [Rejection("empty_batch", "batch envelope is an empty array", None)]
    if len(payload) > limits.max_events_per_message:
        detail = f"{len(payload)} events > max_events_per_message {limits.max_events_per_message}"
        return [], [Rejection("batch_too_large", detail, None)]
    events: list[Any] = []
    rejections: list[Rejection] = []
    for index, element in enumerate(payload):
        try:
            events.append(parse(element, limits))
        except Invalid as exc:
            rejections.append(Rejection(exc.reason, exc.detail, index, _reencodable(element)))
    return events, rejections


def _reencodable(element: Any) -> Any:
    """The element, or its JSON as a Fragment when orjson.dumps cannot encode it.

    orjson.loads takes 1024 levels of nesting but orjson.dumps only 254, so an element
    nested between the two would make the DLQ write fail.
    """
    try:
        orjson.dumps(element)
    except orjson.JSONEncodeError:
        return orjson.Fragment(_dumps_deep(element))
    return element


def _dumps_deep(value: Any) -> bytes:
    """JSON text of a decoded value, without recursion (nesting may exceed the stack)."""
    out: list[bytes] = []
    todo: list[Any] = [value]  # popped from the end; bytes are text to write (JSON has no bytes)
    while todo:
        item = todo.pop()
        if type(item) is bytes:
            out.append(item)
        elif type(item) is list:
            todo.append(b"]")
            for i in range(len(item) - 1, -1, -1):
                todo.append(item[i])
                if i:
                    todo.append(b",")
            todo.append(b"[")
        elif type(item) is dict:
            todo.append(b"}")
            members = list(item.items())
            for i in range(len(members) - 1, -1, -1):
                todo += (members[i][1], orjson.dumps(members[i][0]) + b":")
                if i:
                    todo.append(b",")
            todo.append(b"{")
        else:
            out.append(orjson.dumps(item))
    return b"".join(out)


def _shown(text: str) -> str:
    """Untrusted text for a detail: the repr of at most 64 of its characters (under 650 in all)."""
    return repr(text[:64]) + ("..." if len(text) > 64 else "")


def _optional_id(event: dict[str, Any], name: str, limits: Limits) -> str | None:
    value = event.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Invalid("invalid_field", f"{name} must be a string, got {type(value).__name__}")
    text = str(value)
    if len(text) > limits.max_string_length:
        raise Invalid("invalid_field", f"{name} longer than {limits.max_string_length} characters")
    return text


def parse_timestamp(value: Any) -> float | None:
    """RFC 3339 text or Unix seconds to Unix seconds; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Invalid("invalid_timestamp", "timestamp must be RFC 3339 text or Unix seconds")
    if isinstance(value, (int, float)):
        if not 0 <= value < _MAX_SECONDS:
            raise Invalid("invalid_timestamp", f"timestamp {value} is not plausible Unix seconds")
        return float(value)
    if not isinstance(value, str):
        # Never str() the value: a big one costs its size, a deeply nested one overflows the stack.
        detail = f"timestamp must be RFC 3339 text or Unix seconds, got {type(value).__name__}"
        raise Invalid("invalid_timestamp", detail)
    if len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
            # The same window as Unix seconds: year 1 at +01:00 would break every RFC 3339 output.
            if not 0 <= seconds < _MAX_SECONDS:
                raise Invalid("invalid_timestamp", f"timestamp {_shown(value)} is before 1970 or too far ahead")
            return seconds
    raise Invalid("invalid_timestamp", f"timestamp {_shown(value)} is not RFC 3339")


def _check_scalar(name: str, value: Any, limits: Limits) -> None:
    if isinstance(value, str):
        if len(value) > limits.max_string_length:
            raise Invalid("invalid_feature_value", f"{_shown(name)} longer than {limits.max_string_length} characters")
    elif not isinstance(value, _SCALARS):
        raise Invalid("invalid_feature_value", f"{_shown(name)} must be a number, string, boolean or null")
    elif isinstance(value, float) and not math.isfinite(value):  # pragma: no cover - JSON has none
        raise Invalid("invalid_feature_value", f"{_shown(name)} is not finite")


_PLAIN = frozenset({int, float, str, bool, type(None)})


def _plain_features(features: dict[str, Any], limits: Limits) -> bool:
    """Whether every name and value is fine, checked in C: names of 1 to max_name_length characters;
    numbers, booleans, nulls and text no longer than max_string_length (anything else is looked at one by one)."""
    if "" in features or max(map(len, features)) > limits.max_name_length:
        return False
    types = set(map(type, features.values()))
    if not types <= _PLAIN:
        return False
    if str in types:
        return max(len(value) for value in features.values() if type(value) is str) <= limits.max_string_length
    return True


def parse_event(event: Any, limits: Limits) -> Event:
    """Validate one decoded element against the contract."""
    if not isinstance(event, dict):
        raise Invalid("not_an_object", f"event must be a JSON object, got {type(event).__name__}")
    model = event.get("model")
    if not isinstance(model, str) or not model or len(model) > limits.max_name_length:
        raise Invalid("invalid_model", "model must be a non-empty string of at most "
                      f"{limits.max_name_length} characters")  # fmt: skip
    features = event.get("features")
    if not isinstance(features, dict):
        raise Invalid("invalid_features", "features must be a JSON object")
    if features and not _plain_features(features, limits):
        for name, value in features.items():  # the first fault, in order
            if not name or len(name) > limits.max_name_length:
                raise Invalid("invalid_features", f"feature names must have 1 to {limits.max_name_length} characters")
            if type(value) is not float and type(value) is not int:  # numbers: the common case
                _check_scalar(name, value, limits)
    prediction = event.get("prediction")
    probabilities: dict[str, float] | None = None
    if isinstance(prediction, dict):
        probabilities = _probabilities(prediction, limits)
        prediction = max(probabilities, key=probabilities.__getitem__)  # the top class (first on a tie)
    elif prediction is not None:
        if isinstance(prediction, list):
            raise Invalid("invalid_prediction", "prediction must be a number, string or object")
        try:
            _check_scalar("prediction", prediction, limits)
        except Invalid as exc:
            raise Invalid("invalid_prediction", exc.detail) from None
    return Event(
        model=model,
        model_version=_optional_id(event, "model_version", limits),
        event_id=_optional_id(event, "event_id", limits),
        timestamp=parse_timestamp(event.get("timestamp")),
        features=features,
        prediction=prediction,
        segment=_segment(event.get("segment"), limits),
        probabilities=probabilities,
    )


def parse_label(label: Any, limits: Limits) -> Label:
    """Validate one decoded label element against the contract."""
    if type(label) is not dict:
        raise Invalid("not_an_object", f"label must be a JSON object, got {type(label).__name__}")
    model = label.get("model")
    if type(model) is not str or not model or len(model) > limits.max_name_length:
        raise Invalid("invalid_model", "model must be a non-empty string of at most "
                      f"{limits.max_name_length} characters")  # fmt: skip
    event_id = label.get("event_id")
    if type(event_id) is not str:
        if type(event_id) is not int:  # bool is not
            raise Invalid("invalid_event_id", "event_id must be a non-empty string: it joins the label to its "
                          "prediction")  # fmt: skip
        event_id = str(event_id)
    if not event_id or len(event_id) > limits.max_string_length:
        raise Invalid("invalid_event_id", f"event_id must have 1 to {limits.max_string_length} characters")
    value = label.get("label", _MISSING)
    kind = type(value)
    if kind is str:
        if not value or len(value) > limits.max_string_length:
            raise Invalid("invalid_label", f"a class label must have 1 to {limits.max_string_length} characters")
    elif kind is int:
        if not -(2**63) < value < 2**63:
            raise Invalid("invalid_label", "an integer label must fit in 64 bits")
    elif kind is not float and kind is not bool:  # JSON has no infinite or NaN float
        if value is _MISSING:
            raise Invalid("invalid_label", "label is required: a class (string, integer, boolean) or a number")
        raise Invalid("invalid_label", "label must be a class (string, integer, boolean) or a finite number, "
                      f"got {'null' if value is None else kind.__name__}")  # fmt: skip
    timestamp = label.get("timestamp")
    return Label(model, event_id, value, None if timestamp is None else parse_timestamp(timestamp))


_MISSING = object()


def _probabilities(prediction: dict[str, Any], limits: Limits) -> dict[str, float]:
    if not prediction or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in prediction.values()):
        raise Invalid("invalid_prediction", "prediction object must map classes to probabilities")
    if len(prediction) > limits.max_classes:
        raise Invalid("invalid_prediction", f"prediction object has more than {limits.max_classes} classes")
    for name, p in prediction.items():
        if len(name) > limits.max_string_length:  # class names are keys, checked by no one else
            raise Invalid("invalid_prediction", f"class name longer than {limits.max_string_length} characters")
        if not 0 <= p <= 1:
            raise Invalid("invalid_prediction", f"probability of class {_shown(name)} is {p}, not in [0, 1]")
    return {name: float(p) for name, p in prediction.items()}


def _segment(segment: Any, limits: Limits) -> dict[str, str | int | float | bool] | None:
    """The segment object, bounded: it names monitors and metric labels."""
    if segment is None:
        return None
    if not isinstance(segment, dict):
        raise Invalid("invalid_segment", f"segment must be a JSON object, got {type(segment).__name__}")
    if len(segment) > limits.max_segment_keys:
        detail = f"segment has {len(segment)} keys > max_segment_keys {limits.max_segment_keys}"
        raise Invalid("invalid_segment", detail)
    for key, value in segment.items():
        if not key or len(key) > limits.max_segment_length:
            raise Invalid("invalid_segment", f"segment keys must have 1 to {limits.max_segment_length} characters")
        if isinstance(value, str):
            if len(value) > limits.max_segment_length:
                raise Invalid("invalid_segment", f"segment {_shown(key)} longer than {limits.max_segment_length} "
                              "characters")  # fmt: skip
        elif not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            raise Invalid("invalid_segment", f"segment {_shown(key)} must be a string, number or boolean")
    return segment
