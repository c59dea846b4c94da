"""Property-based bad-input sweep of the decoder.

Whatever bytes arrive, decode_message must return (events, rejections) and never raise;
every rejection has a reason from REASONS and a short detail; nothing is lost or doubled
in a batch envelope; what it lets through is safe for the detectors; and a rejected
batch element can be re-encoded for the DLQ.
"""

from __future__ import annotations

import math
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from streams.decode import REASONS, Event, Limits, Rejection, decode_message, parse_event

SMALL = Limits(max_message_bytes=20_000, max_events_per_message=8, max_name_length=20, max_string_length=30)
DEFAULT = Limits()
MAX_DETAIL = 1000  # the DLQ header carries the detail; a detail never embeds a whole value


def sweep(examples: int) -> settings:
    # No example database: nothing written into the repository; the explicit @examples pin the known cases.
    return settings(max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


ODD_LENGTHS = (0, 1, 19, 20, 21, 29, 30, 31, 64, 65, 199, 200, 201, 1023, 1024, 1025, 3000)
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # orjson's integers; beyond them it gives floats


# --- the properties, checked for every input -------------------------------------------------


_UNPARSED = object()


def _loads(value: bytes | None) -> Any:
    try:
        return orjson.loads(value)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError):
        return _UNPARSED


def _assert_safe(event: Event, limits: Limits) -> None:
    """Property 4: an event carries only what the detectors and the output encoders take."""
    assert type(event.model) is str and 1 <= len(event.model) <= limits.max_name_length
    event.model.encode()  # the Kafka key of alerts and metrics
    for text in (event.model_version, event.event_id):
        assert text is None or (type(text) is str and len(text) <= limits.max_string_length)
    if event.timestamp is not None:
        assert type(event.timestamp) is float and 0 <= event.timestamp < 1e11
        datetime.fromtimestamp(event.timestamp, tz=UTC).isoformat()  # alert windows are RFC 3339
    assert type(event.features) is dict
    for name, value in event.features.items():
        assert type(name) is str and 1 <= len(name) <= limits.max_name_length
        _assert_scalar(value, limits)
    _assert_scalar(event.prediction, limits)
    orjson.dumps(  # the engine re-encodes an event it cannot admit (too_many_models)
        {"model": event.model, "features": event.features, "prediction": event.prediction,
         "timestamp": event.timestamp, "event_id": event.event_id, "model_version": event.model_version}
    )  # fmt: skip


def _assert_scalar(value: Any, limits: Limits) -> None:
    assert type(value) in (str, int, float, bool, type(None)), type(value)
    if type(value) is float:
        assert math.isfinite(value)
    elif type(value) is int:
        assert INT_MIN <= value <= INT_MAX  # float64 takes it (numeric columns are numpy float64)
    elif type(value) is str:
        assert len(value) <= limits.max_string_length


def _longest(event: Event) -> int:
    texts = [event.prediction, event.event_id, event.model_version, *event.features.values()]
    return max((len(text) for text in texts if type(text) is str), default=0)


def _assert_rejection(rejection: Rejection) -> None:
    """Property 2: a reason from the fixed set, a non-empty bounded detail."""
    assert rejection.reason in REASONS
    assert type(rejection.detail) is str and 0 < len(rejection.detail) <= MAX_DETAIL, rejection.detail[:200]
    rejection.detail.encode()  # a Kafka header


def _assert_dlq_element(rejection: Rejection, element: Any) -> None:
    """Property 5: the worker re-encodes a rejected element for the DLQ, unchanged."""
    encoded = orjson.dumps(rejection.element, option=orjson.OPT_PASSTHROUGH_DATACLASS, default=str)
    assert _same(orjson.loads(encoded), element)


def _same(a: Any, b: Any) -> bool:
    """a == b without recursion (== on 1000 nested lists overflows the interpreter's stack)."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if type(x) is list:
            if len(x) != len(y):
                return False
            pending += zip(x, y, strict=True)
        elif type(x) is dict:
            if x.keys() != y.keys():
                return False
            pending += ((x[key], y[key]) for key in x)
        elif x != y:
            return False
    return True


def _alone(element: Any, limits: Limits) -> tuple[list[Event], list[Rejection]] | None:
    """What decoding one element as a message of its own gives (None if orjson cannot encode it)."""
    try:
        return decode_message(orjson.dumps(element), limits)
    except orjson.JSONEncodeError:
        return None


def check(value: bytes | None, limits: Limits) -> tuple[list[Event], list[Rejection]]:
    events, rejections = decode_message(value, limits)  # property 1: it returns
    assert type(events) is list and type(rejections) is list
    for rejection in rejections:
        _assert_rejection(rejection)
    for event in events:
        assert type(event) is Event
        _assert_safe(event, limits)
    # Steer the search towards the edges of properties 2 and 4: long details, long accepted strings.
    if currently_in_test_context():
        target(max((len(r.detail) for r in rejections), default=0), label="detail length")
        target(max((_longest(e) / limits.max_string_length for e in events), default=0), label="string/limit")
    payload = _loads(value) if value is not None and len(value) <= limits.max_message_bytes else _UNPARSED
    if type(payload) is list and 0 < len(payload) <= limits.max_events_per_message:
        # Property 3: each element exactly once, as a rejection (by index) or an event.
        indexes = [r.index for r in rejections]
        assert all(type(i) is int for i in indexes) and indexes == sorted(set(indexes))
        assert all(0 <= i < len(payload) for i in indexes)  # type: ignore[operator]
        assert len(events) + len(rejections) == len(payload)
        good = [element for i, element in enumerate(payload) if i not in set(indexes)]
        for event, element in zip(events, good, strict=True):
            assert event == parse_event(element, limits)
            alone = _alone(element, limits)
            assert alone is None or alone == ([event], [])
        for rejection in rejections:
            element = payload[rejection.index]  # type: ignore[index]
            assert isinstance(rejection.element, orjson.Fragment) or _same(rejection.element, element)
            _assert_dlq_element(rejection, element)
            if type(element) is not list:  # a list alone would be a batch envelope of its own
                alone = _alone(element, limits)
                assert alone is None or [r.reason for r in alone[1]] == [rejection.reason]
    else:
        # A single object, or a message rejected as a whole: exactly one outcome.
        assert len(events) + len(rejections) == 1
        for rejection in rejections:
            assert rejection.index is None and rejection.element is None
    return events, rejections


# --- strategies -------------------------------------------------------------------------------

MISSING = object()  # the key is left out

ints = st.integers(INT_MIN, INT_MAX)
floats = st.floats(allow_nan=False, allow_infinity=False)
nonprinting = st.characters(codec="utf-8", categories=["Cc", "Cf", "Co", "Cn", "Zl", "Zp"])  # repr escapes them
odd_text = st.one_of(
    st.text(max_size=12),
    st.text(nonprinting | st.characters(codec="utf-8", categories=["Zs", "Mn"]), max_size=12),
    st.builds(lambda ch, n: ch * n, st.characters(codec="utf-8") | nonprinting, st.sampled_from(ODD_LENGTHS)),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, odd_text)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4), max_leaves=12
)
names = st.sampled_from(["fraud", "churn", "m", "a.b-c_d/1", "Ünïcødé", "x" * 20])


def mostly(good: st.SearchStrategy[Any], *bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The good value 7 times in 8 (so most events have at most one bad part), else a bad one."""
    return st.sampled_from([True] * 7 + [False]).flatmap(lambda ok: good if ok else st.one_of(*bad))


def good_or(good: st.SearchStrategy[Any], *bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field: mostly good, else anything wrong or the key left out."""
    return mostly(good, *bad, st.just(MISSING))


offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
plausible = st.datetimes(datetime(1970, 1, 2), datetime(5000, 1, 1))
rfc3339 = st.one_of(
    plausible.map(lambda d: d.isoformat() + "Z"),
    plausible.map(datetime.isoformat),
    st.datetimes(timezones=st.builds(timezone, offsets)).map(datetime.isoformat),  # years 1 to 9999
    st.dates().map(lambda d: d.isoformat()),
)
timestamps = good_or(
    st.one_of(st.floats(0, 1e11, exclude_max=True), st.integers(0, 10**11 - 1), rfc3339),
    ints, floats, odd_text, json_values,
)  # fmt: skip
feature_values = mostly(st.one_of(st.none(), st.booleans(), ints, floats, st.text(max_size=8)), odd_text, json_values)
features = good_or(
    st.dictionaries(mostly(st.text(min_size=1, max_size=8), odd_text), feature_values, max_size=6),
    json_values,
)  # fmt: skip
probabilities = st.dictionaries(st.text(max_size=8) | odd_text, ints | floats, min_size=1, max_size=4)
predictions = good_or(
    st.one_of(st.none(), floats, st.integers(0, 9), st.text(max_size=8), probabilities),
    st.dictionaries(st.text(max_size=4), json_values, max_size=3),
    json_values,
)  # fmt: skip
ids = good_or(st.one_of(st.text(max_size=8), st.integers(0, 10**6)), odd_text, ints, json_values)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    fields = {
        "model": draw(good_or(names, odd_text, json_values)),
        "model_version": draw(ids),
        "event_id": draw(ids),
        "timestamp": draw(timestamps),
        "features": draw(features),
        "prediction": draw(predictions),
        "segment": draw(good_or(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2), json_values)),
        draw(st.text(max_size=6)): draw(json_values),  # an unknown field (or a known one, overwritten)
    }
    return {key: value for key, value in fields.items() if value is not MISSING}


elements = st.one_of(events(), events(), json_values)
batches = st.lists(elements, min_size=0, max_size=SMALL.max_events_per_message + 2)
limits = st.sampled_from([SMALL, DEFAULT])

# Raw JSON tokens orjson refuses, or takes in a way worth a look, spliced where a value goes.
TOKENS = [
    b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"inf", b"1e400", b"-1e400", b"1" + b"0" * 400, b"-" + b"9" * 400,
    b"18446744073709551615", b"18446744073709551616", b"-9223372036854775808", b"-9223372036854775809",
    b"1.7976931348623157e308", b"1.8e308", b"5e-324", b"1e-400", b"-0", b"-0.0", b"0e0", b"01", b"1.", b".5", b"+1",
    b"0x10", b"true", b"True", b"null", b"None", b'"\\u0000"', b'"\\ud800"', b'"\\udc00x"', b'"\\ud83d\\ude00"',
    b'"\xed\xa0\x80"', b'"\xff"', b'"\x00"', b"[]", b"{}", b'""', b"[[[[]]]]",
]  # fmt: skip
REFUSED = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"inf", b"1e400", b"-1e400", b"1" + b"0" * 400]
TEMPLATES = [
    b"%s",
    b"[%s]",
    b'{"model":%s,"features":{}}',
    b'{"model":"m","model_version":%s,"features":{}}',
    b'{"model":"m","event_id":%s,"features":{}}',
    b'{"model":"m","timestamp":%s,"features":{}}',
    b'{"model":"m","features":%s}',
    b'{"model":"m","features":{"a":%s}}',
    b'{"model":"m","features":{},"prediction":%s}',
    b'{"model":"m","features":{},"prediction":{"a":%s}}',
    b'{"model":"m","features":{},"segment":%s}',
    b'[{"model":"m","features":{"a":1}},%s,{"model":"m","features":{"a":2}}]',
    b'[{"model":"m","features":{"a":1}},{"model":"m","features":{"a":%s}}]',
]


# --- the sweeps --------------------------------------------------------------------------------


@sweep(500)
@given(st.binary(max_size=300), limits)
@example(b"", SMALL)
@example(b"\xff\xfe\x00", SMALL)
@example(b"\xef\xbb\xbf{}", SMALL)
@example(b'{"model":"m","features":{}}\x00', SMALL)
@example(b"\xed\xa0\x80", SMALL)
def test_arbitrary_bytes(value: bytes, limits: Limits) -> None:
    check(value, limits)


def test_a_message_without_a_value() -> None:
    (rejection,) = check(None, SMALL)[1]
    assert rejection.reason == "invalid_json"


@sweep(300)
@given(st.one_of(events(), batches, json_values), limits)
@example({}, SMALL)
@example([], SMALL)
@example([{}], SMALL)
@example([[]], SMALL)
@example({"model": "m", "features": {}}, SMALL)
@example({"model": "", "features": {}}, SMALL)
@example({"model": "m" * 21, "features": {}}, SMALL)
@example({"model": "\x00\n\x1b[31m", "features": {}}, SMALL)
@example({"model": 7, "features": {}}, SMALL)
@example({"model": ["m"], "features": {}}, SMALL)
@example({"model": "m", "features": {"\U000e0001" * 200: "x" * 2000}}, DEFAULT)  # repr 10x the name
@example({"model": "m", "features": {"a": "\U000e0001" * 1025}}, DEFAULT)
@example({"model": "m", "features": {}, "prediction": {"c" * 5000: 1.0}}, DEFAULT)  # the top class
@example({"model": "m", "features": {}, "prediction": {"a": 0.1, "b" * 31: 0.9}}, SMALL)
@example({"model": "m", "features": {}, "prediction": {}}, SMALL)
@example({"model": "m", "features": {}, "prediction": {"a": True}}, SMALL)
@example({"model": "m", "features": {}, "prediction": True}, SMALL)
@example({"model": "m", "features": {}, "timestamp": "0001-01-01T00:00:00+01:00"}, SMALL)
@example({"model": "m", "features": {}, "timestamp": "9999-12-31T23:59:59-23:59"}, SMALL)
@example({"model": "m", "features": {}, "timestamp": "1969-12-31T23:59:59Z"}, SMALL)
@example({"model": "m", "features": {}, "timestamp": 1e11}, SMALL)
@example({"model": "m", "features": {}, "timestamp": "x" * 5000}, SMALL)
@example({"model": "m", "features": {}, "event_id": 2**64 - 1}, SMALL)
@example({"model": "m", "features": {"a": 2**64 - 1, "b": -(2**63), "c": 1.7976931348623157e308}}, SMALL)
@example([{"model": "m", "features": {}}] * 8, SMALL)
@example([{"model": "m", "features": {}}] * 9, SMALL)
@example([{"model": "m", "features": {}}, 7, None, [], {}, {"model": "m", "features": []}], SMALL)
def test_json_of_every_shape(value: Any, limits: Limits) -> None:
    check(orjson.dumps(value), limits)


@sweep(100)
@given(batches)
def test_batch_envelopes_mixing_good_and_bad_elements(batch: list[Any]) -> None:
    check(orjson.dumps(batch), SMALL)


@pytest.mark.parametrize("template", TEMPLATES)
def test_raw_tokens_in_every_position(template: bytes) -> None:
    for token in TOKENS:
        for limits in (SMALL, DEFAULT):
            events, rejections = check(template % token, limits)
            if token in REFUSED:  # orjson refuses them: no NaN or infinity gets in, whole message rejected
                assert [r.reason for r in rejections] == ["invalid_json"]


@sweep(150)
@given(st.one_of(events(), batches), st.integers(0, 400), st.binary(max_size=3), st.integers(0, 3))
def test_malformed_json(value: Any, at: int, junk: bytes, cut: int) -> None:
    text = orjson.dumps(value)
    check(text[:at] + junk + text[at + cut :], SMALL)


# --- nesting: orjson parses at most 1024 levels and re-encodes at most 254 ---------------------


def _lists(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


GOOD = b'{"model":"m","features":{"a":1}}'
NESTED = [
    lambda deep: deep,
    lambda deep: b"[" + GOOD + b"," + deep + b"," + GOOD + b"]",  # a deep element beside good ones
    lambda deep: b'[{"model":"m","features":' + deep + b"}," + GOOD + b"]",
    lambda deep: b'[{"model":"m","features":{"a":' + deep + b"}}," + GOOD + b"]",
    lambda deep: b'[{"model":"m","features":{},"extra":' + deep + b"}," + GOOD + b"]",  # ignored field
    lambda deep: b'{"model":"m","features":{},"prediction":' + deep + b"}",
    lambda deep: b'{"model":"m","features":{},"prediction":{"a":' + deep + b"}}",
    lambda deep: b'[{"model":"m","features":{},"timestamp":' + deep + b"}," + GOOD + b"]",
    lambda deep: b'[{"model":"m","features":{},"event_id":' + deep + b"}," + GOOD + b"]",
    lambda deep: b'[{"model":' + deep + b',"features":{}},' + GOOD + b"]",
    lambda deep: b'[{"model":"m","features":{},"segment":' + deep + b"}," + GOOD + b"]",
]


@pytest.mark.parametrize("depth", [2, 253, 254, 255, 256, 1000, 1021, 1022, 1023, 1024, 1025, 10_000, 1_000_000])
@pytest.mark.parametrize("deep", [_lists, _objects])
@pytest.mark.parametrize("wrap", range(len(NESTED)))
def test_deep_nesting_never_blows_the_stack(depth: int, deep: Any, wrap: int) -> None:
    value = NESTED[wrap](deep(depth))
    events, rejections = check(value, DEFAULT)
    if depth > 1024:
        assert _loads(value) is _UNPARSED  # orjson's depth limit
    if _loads(value) is _UNPARSED:
        assert events == [] and [r.reason for r in rejections] == ["invalid_json"]


# --- size limits and a real 10 MB message ----------------------------------------------------


@cache
def big_batch() -> bytes:
    """Exactly max_message_bytes: 10,000 events with a unique long category each.

    Every 997th category is one character over max_string_length, the one after it exactly at it.
    """
    limit = DEFAULT.max_string_length
    batch = [
        {
            "model": "fraud",
            "event_id": str(i),
            "timestamp": 1795428000 + i,
            "features": {
                "amount": i * 0.5,
                "n": i,
                "flag": i % 2 == 0,
                "missing": None,
                "category": f"{i:06d}é" + "x" * (800 if i % 997 > 1 else limit - 7 + (i % 997 == 0)),
            },
            "prediction": {"a": 0.25, "b": 0.75},
        }
        for i in range(DEFAULT.max_events_per_message)
    ]
    text = orjson.dumps(batch)
    assert len(text) <= DEFAULT.max_message_bytes
    return text + b" " * (DEFAULT.max_message_bytes - len(text))  # JSON allows trailing whitespace


def tiny_objects() -> bytes:
    """One byte over max_message_bytes of `[{},{},...]`: 3.5 million elements, if it were parsed."""
    n = DEFAULT.max_message_bytes // 3
    text = b"[" + b"{}," * (n - 1) + b"{}]"
    return text + b" " * (DEFAULT.max_message_bytes + 1 - len(text))


def _peak(value: bytes, limits: Limits) -> tuple[tuple[list[Event], list[Rejection]], int]:
    tracemalloc.start()
    try:
        result = decode_message(value, limits)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_10_mb_batch_just_under_the_limit_decodes_within_bounded_memory() -> None:
    value = big_batch()
    assert len(value) == DEFAULT.max_message_bytes
    (events, rejections), peak = _peak(value, DEFAULT)
    # Measured ~14x (orjson sizes its parse buffers by the input, then builds the objects).
    assert peak < 20 * len(value), peak
    assert len(events) == 9_989 and [r.index for r in rejections] == list(range(0, 10_000, 997))
    assert {r.reason for r in rejections} == {"invalid_feature_value"}
    assert len({event.features["category"] for event in events}) == len(events)  # extreme cardinality
    check(value, DEFAULT)


# What orjson builds per byte of input depends on the shape, hardly on the size: the costliest
# shapes found (many tiny containers) measure 36x to 49x. Decoding needs the whole document, so
# the bound is 64 * max_message_bytes for one message (640 MiB at the default 10 MiB).
WORST = 64


@pytest.mark.parametrize(
    "unit",
    [b"{}", b"[" * 8 + b"]" * 8, b"[" * 1000 + b"]" * 1000, b'{"":' * 100 + b"{}" + b"}" * 100],
    ids=["empty-objects", "lists-8", "lists-1000", "objects-100"],
)
def test_the_costliest_shapes_per_byte_stay_within_the_bound(unit: bytes) -> None:
    """512 KiB of empty objects, nested lists or one-key objects: ~36x, ~42x, ~44x and ~49x."""
    value = b"[" + b",".join([unit] * (2**19 // (len(unit) + 1))) + b"]"
    (events, rejections), peak = _peak(value, DEFAULT)
    assert events == [] and rejections  # too many elements, or every element rejected
    assert peak < WORST * len(value), peak


@pytest.mark.parametrize("message", [lambda: big_batch() + b" ", tiny_objects], ids=["batch", "tiny-objects"])
def test_one_byte_over_the_limit_is_rejected_before_parsing(message: Any) -> None:
    value = message()
    assert len(value) == DEFAULT.max_message_bytes + 1
    (events, rejections), peak = _peak(value, DEFAULT)
    assert events == [] and [r.reason for r in rejections] == ["message_too_large"]
    assert peak < 64 * 1024  # nothing parsed
    check(value, DEFAULT)


@sweep(100)
@given(st.integers(0, 3), st.integers(1, 40))
def test_messages_around_the_byte_limit(slack: int, events_count: int) -> None:
    text = orjson.dumps([{"model": "m", "features": {"a": 1}}] * events_count)
    limits = Limits(max_message_bytes=len(text) + slack - 2, max_events_per_message=events_count)
    events, rejections = check(text, limits)
    if len(text) > limits.max_message_bytes:
        assert [r.reason for r in rejections] == ["message_too_large"]
    else:
        assert len(events) == events_count and rejections == []


@sweep(100)
@given(st.integers(1, 30), st.integers(-2, 2))
def test_batches_around_the_event_limit(count: int, over: int) -> None:
    limit = max(1, count - over)
    text = orjson.dumps([{"model": "m", "features": {}}] * count)
    events, rejections = check(text, Limits(max_events_per_message=limit))
    if count > limit:
        assert [r.reason for r in rejections] == ["batch_too_large"]
    else:
        assert len(events) == count
