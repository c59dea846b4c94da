from __future__ import annotations

import orjson
import pytest

from streams.decode import REASONS, Limits, decode_message

LIMITS = Limits(max_message_bytes=10_000, max_events_per_message=5, max_name_length=20, max_string_length=30)
GOOD = {"model": "fraud", "features": {"amount": 12.5, "country": "DE", "is_new": True, "age": None}}


def reasons(value: bytes) -> list[str]:
    return [r.reason for r in decode_message(value, LIMITS)[1]]


def test_a_contract_event_decodes() -> None:
    event = dict(GOOD, model_version=3, event_id="6f1c2a", timestamp="2026-11-23T10:00:00Z",
                 prediction={"a": 0.2, "b": 0.8}, segment={"region": "eu"})  # fmt: skip
    (decoded,), rejected = decode_message(orjson.dumps(event), LIMITS)
    assert rejected == []
    assert decoded.model == "fraud" and decoded.model_version == "3" and decoded.event_id == "6f1c2a"
    assert decoded.timestamp == 1795428000.0
    assert decoded.prediction == "b" and decoded.probabilities == {"a": 0.2, "b": 0.8}
    assert decoded.segment == {"region": "eu"}
    assert decoded.features["country"] == "DE"


def test_unix_seconds_timestamp_and_absent_timestamp() -> None:
    (a,), _ = decode_message(orjson.dumps(dict(GOOD, timestamp=1795428000.5)), LIMITS)
    (b,), _ = decode_message(orjson.dumps(GOOD), LIMITS)
    assert a.timestamp == 1795428000.5 and b.timestamp is None


def test_a_bad_element_of_a_batch_loses_nothing_else() -> None:
    batch = [GOOD, {"model": "fraud", "features": "nope"}, GOOD, 7]
    events, rejected = decode_message(orjson.dumps(batch), LIMITS)
    assert len(events) == 2
    assert [(r.reason, r.index, r.element) for r in rejected] == [
        ("invalid_features", 1, {"model": "fraud", "features": "nope"}),
        ("not_an_object", 3, 7),
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[]", "empty_batch"),
        (orjson.dumps([GOOD] * 6), "batch_too_large"),
        (b"x" * 10_001, "message_too_large"),
        (b'"text"', "not_an_object"),
        (orjson.dumps({"features": {}}), "invalid_model"),
        (orjson.dumps({"model": "", "features": {}}), "invalid_model"),
        (orjson.dumps({"model": "m"}), "invalid_features"),
        (orjson.dumps({"model": "m", "features": {"a": [1]}}), "invalid_feature_value"),
        (orjson.dumps({"model": "m", "features": {"a": {"b": 1}}}), "invalid_feature_value"),
        (orjson.dumps({"model": "m", "features": {"a": "x" * 31}}), "invalid_feature_value"),
        (orjson.dumps({"model": "m", "features": {"n" * 21: 1}}), "invalid_features"),
        (orjson.dumps({"model": "m", "features": {}, "timestamp": "yesterday"}), "invalid_timestamp"),
        (orjson.dumps({"model": "m", "features": {}, "timestamp": -5}), "invalid_timestamp"),
        (orjson.dumps({"model": "m", "features": {}, "prediction": [0.1]}), "invalid_prediction"),
        (orjson.dumps({"model": "m", "features": {}, "prediction": {"a": "x"}}), "invalid_prediction"),
        (orjson.dumps({"model": "m", "features": {}, "segment": "eu"}), "invalid_segment"),
        (orjson.dumps({"model": "m", "features": {}, "segment": {"k": [1]}}), "invalid_segment"),
        (orjson.dumps({"model": "m", "features": {}, "segment": {str(i): 1 for i in range(9)}}), "invalid_segment"),
        (orjson.dumps({"model": "m", "features": {}, "segment": {"k": "v" * 65}}), "invalid_segment"),
        (orjson.dumps({"model": "m", "features": {}, "prediction": {"a": 1.5}}), "invalid_prediction"),
        (orjson.dumps({"model": "m", "features": {}, "event_id": 1.5}), "invalid_field"),
        (b"1e400", "invalid_json"),
        (b"[" * 2000 + b"]" * 2000, "invalid_json"),
    ],
)
def test_each_kind_of_bad_input_gets_its_reason(value: bytes, reason: str) -> None:
    assert reason in REASONS
    assert reasons(value) == [reason]


def test_a_message_without_a_value_is_rejected() -> None:
    assert [r.reason for r in decode_message(None, LIMITS)[1]] == ["invalid_json"]
