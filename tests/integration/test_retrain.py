"""Retraining requests end to end: a real broker, redis-server and worker; two drifting inputs make one request."""

from __future__ import annotations

import re
from datetime import datetime

import orjson
import pytest
from confluent_kafka import Producer

from streams.settings import Settings
from streams.simulate import Drift, Traffic, produce
from tests.integration.harness import WorkerProcess, alerts_of, isolated_settings, read_topic, wait_until

pytestmark = pytest.mark.integration

CONTRACT_FIELDS = {"request_id", "model", "model_version", "reason", "alert_ids", "since", "created_at"}


def seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_two_drifting_inputs_request_one_retraining(kafka_bootstrap: str, redis_url: str) -> None:
    """With the offsets in the input topics since the change began."""
    settings: Settings = isolated_settings(kafka_bootstrap, redis_url, "retrain", topic_partitions=2,
                                           dataset_drift_events=500)  # fmt: skip
    traffic = Traffic(models=("churn",), numeric=6, categorical=0, seed=11, drifts=(
        Drift("f1", start=8000, magnitude=2.0), Drift("f4", start=8000, magnitude=2.0)))  # fmt: skip
    # An alert from before the worker group first read the alert topic (as on an upgrade): history,
    # which must not request a retraining now.
    old = {"alert_id": "0" * 32, "type": "concept_drift", "status": "firing", "severity": "critical",
           "model": "legacy", "model_version": "1", "feature": None, "segment": None, "detector": "ddm",
           "statistic": 0.3, "threshold": 0.2, "p_value": None,
           "window": {"count": 200, "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:10:00Z"},
           "reference": {}, "current": {}, "detected_at": "2026-01-01T00:10:00Z", "message": "legacy: old news"}
    producer = Producer(settings.confluent_config())
    producer.produce(settings.topic_alerts, key=b"legacy", value=orjson.dumps(old))
    assert producer.flush(10) == 0
    worker = WorkerProcess(settings)
    try:
        assert produce(settings, traffic, count=16_000, batch_size=50) == 16_000
        worker.wait_consumed(16_000 // 50)
        wait_until(lambda: bool(read_topic(settings, settings.topic_retrain, timeout=1.0)), 60,
                   "a retraining request", (worker,))  # fmt: skip
        requests = [orjson.loads(m.value()) for m in read_topic(settings, settings.topic_retrain)]
        alerts = alerts_of(settings)
        events = read_topic(settings, settings.topic_events)
        published = worker.metric("driftstream_retrain_requests_total", {"outcome": "published"})
    finally:
        worker.stop()
    (request,) = requests  # one per model per cooldown (a day), none for the alert of the past
    print(orjson.dumps(request, option=orjson.OPT_INDENT_2).decode())
    assert published == 1
    assert CONTRACT_FIELDS <= request.keys()
    assert re.fullmatch(r"[0-9a-f]{32}", request["request_id"]) and request["model"] == "churn"
    assert request["model_version"] == "1"
    # Triggered by the dataset drift alert, naming the two inputs' critical alerts with it.
    by_id = {alert["alert_id"]: alert for alert in alerts}
    trigger, *others = (by_id[alert_id] for alert_id in request["alert_ids"])
    assert (trigger["type"], trigger["feature"], trigger["detector"]) == ("data_drift", None, "dataset")
    assert trigger["current"]["drifting_features"] == ["f1", "f4"]
    assert {alert["feature"] for alert in others} == {"f1", "f4"}
    assert request["reason"] == ("Retrain churn version 1: its inputs drifted (data_drift, critical, dataset); 2 more "
                                 "critical alert(s) firing: 2 input features in critical data drift, 2 or more for "
                                 "at least 500 events: f1, f4 (dataset drift, critical)")
    # since: the event time the first input turned critical, and where each events partition reaches it.
    since = seconds(request["since"]["event_time"])
    assert since == seconds(trigger["window"]["start"])
    offsets = request["since"]["offsets"]
    assert set(offsets) == {settings.topic_events, settings.topic_labels}
    assert set(offsets[settings.topic_events]) == {"0", "1"}
    since_ms = round(since * 1000)
    for message in events:
        first = offsets[settings.topic_events][str(message.partition())]
        at = message.timestamp()[1]
        # Nothing since the change is before the offset; what is after it but older is at most one
        # producer batch (the test broker answers ListOffsets per record batch, as Kafka may too).
        assert at < since_ms if message.offset() < first else at >= since_ms - 1000, (message.partition(),
                                                                                      message.offset())  # fmt: skip
    assert sum(offsets[settings.topic_labels].values()) == 0  # no labels were sent
    assert seconds(request["created_at"]) >= seconds(trigger["detected_at"])
