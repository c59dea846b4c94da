"""Late labels end to end: a real broker, redis-server and worker processes (SIGKILL included).

Two models: ``churn``, a classifier whose input-to-label relation changes at event
``DRIFT`` while its inputs stay the same (concept drift), and ``price``, a regression model
whose absolute errors double from ``DRIFT`` on. Every worker group first applies all the
events, then its own labels topic gets the labels, so each group joins the same labels to
the same stored predictions in the same order.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from streams.settings import Settings
from tests.integration.harness import (
    WorkerProcess,
    isolated_settings,
    read_topic,
    state_differences,
    stored_state,
    wait_until,
    worker_group,
)

pytestmark = pytest.mark.integration

EVENTS = 9000  # per model
DRIFT = 5000
EVENTS_PER_MESSAGE = 500
LABELS_PER_MESSAGE = 2  # many small messages: a kill lands between checkpoints
T0 = time.time() - 86400.0  # yesterday: labels come a minute after their predictions


def world(model: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events of ``model`` and their labels (seeded)."""
    rng = np.random.default_rng(17 if model == "churn" else 18)
    x, noise, other = rng.standard_normal(EVENTS), rng.standard_normal(EVENTS), rng.standard_normal(EVENTS)
    after = np.arange(EVENTS) >= DRIFT
    if model == "churn":
        predictions = [round(float(p), 4) for p in 1 / (1 + np.exp(-2 * x))]
        truth = np.where(after, x + 0.6 * noise > 1.0, x + 0.6 * noise > 0)  # the boundary moves; x does not
        labels: list[Any] = [int(t) for t in truth]
    else:
        predictions = [round(float(p), 4) for p in 3 * x + 10]
        labels = [round(float(v), 4) for v in 3 * x + 10 + np.where(after, 2.0, 1.0) * noise]
    events = [{"model": model, "event_id": f"{model}-{i}", "timestamp": T0 + i * 0.5,
               "features": {"x": float(x[i]), "other": float(other[i])}, "prediction": predictions[i]}
              for i in range(EVENTS)]  # fmt: skip
    label_events = [{"model": model, "event_id": f"{model}-{i}", "label": labels[i], "timestamp": T0 + i * 0.5 + 60}
                    for i in range(EVENTS)]  # fmt: skip
    return events, label_events


MODELS = ("churn", "price")
WORLDS = {model: world(model) for model in MODELS}


def send(config: Settings, topic: str, which: int, per_message: int) -> int:
    producer = Producer(config.confluent_config())
    sent = 0
    for model in MODELS:
        items = WORLDS[model][which]
        for start in range(0, len(items), per_message):
            producer.produce(topic, key=model.encode(), value=orjson.dumps(items[start : start + per_message]))
            sent += 1
    producer.flush(30)
    return sent


def covered(config: Settings, topic: str, messages: int) -> bool:
    return sum(int(state.get(b"offset", -1)) + 1 for state in stored_state(config, topic).values()) == messages


def alerts(config: Settings) -> list[dict[str, Any]]:
    return [orjson.loads(m.value()) for m in read_topic(config, config.topic_alerts)]


def run_until(config: Settings, done: Any, what: str, timeout: float = 180) -> None:
    worker = WorkerProcess(config)
    try:
        wait_until(done, timeout, what, (worker,))
    finally:
        assert worker.stop() == 0, worker.tail()


@pytest.fixture(scope="module")
def shared(kafka_bootstrap: str, redis_url: str) -> Iterator[tuple[Settings, Settings, int]]:
    """Two worker groups that applied every event; then the labels; one group ran through them."""
    base = isolated_settings(kafka_bootstrap, redis_url, "lab", topic_partitions=2, reference_size=2000,
                             broker_session_timeout=6.0, broker_rebalance_timeout=6.0, checkpoint_interval=0.25,
                             batch_max=200)  # fmt: skip
    event_messages = send(base, base.topic_events, 0, EVENTS_PER_MESSAGE)
    straight, killed = worker_group(base, "straight"), worker_group(base, "killed")
    for config in (straight, killed):
        run_until(config, lambda c=config: covered(c, c.topic_events, event_messages), "the events to be applied")
    label_messages = send(base, base.topic_labels, 1, LABELS_PER_MESSAGE)
    run_until(straight, lambda: covered(straight, straight.topic_labels, label_messages), "the labels to be applied")
    yield straight, killed, label_messages


def test_concept_drift_without_input_drift_fires_concept_drift_and_performance_only(shared) -> None:
    straight, _, _ = shared
    found = alerts(straight)
    churn = [a for a in found if a["model"] == "churn"]
    kinds = {(a["type"], a["status"]) for a in churn}
    assert ("concept_drift", "firing") in kinds and ("performance", "firing") in kinds, kinds
    assert not [a for a in found if a["type"] in ("data_drift", "prediction_drift")], found
    drift = next(a for a in churn if a["type"] == "concept_drift" and a["severity"] == "critical")
    performance = next(a for a in churn if a["type"] == "performance" and a["status"] == "firing")
    # It fires on labels of predictions made after the change, and says what it compared.
    assert drift["window"]["end"] >= _rfc3339(T0 + DRIFT * 0.5)
    assert "confusion" in performance["current"] and "confusion" in performance["reference"]
    assert performance["current"]["accuracy"] < performance["reference"]["accuracy"] - 0.05
    print(f"\nconcept drift: {drift['message']}\nperformance: {performance['message']}")


def test_a_regression_model_whose_mae_doubles_fires_performance(shared) -> None:
    straight, _, _ = shared
    price = [a for a in alerts(straight) if a["model"] == "price"]
    fired = [a for a in price if a["type"] == "performance" and a["status"] == "firing"]
    assert fired, price
    assert fired[0]["current"]["mae"] > 1.5 * fired[0]["reference"]["mae"]
    assert not [a for a in price if a["type"] in ("data_drift", "prediction_drift")]


def test_sigkill_while_labels_flow_changes_no_quality_state_and_no_alert(shared) -> None:
    straight, killed, label_messages = shared

    def done() -> bool:
        return covered(killed, killed.topic_labels, label_messages)

    rng = random.Random(13)
    kills = []
    while len(kills) < 4:
        worker = WorkerProcess(killed)
        target = rng.randint(200, 800)  # label messages this life reads (replays included) before the kill
        try:
            wait_until(lambda w=worker, n=target: w.metric("driftstream_label_messages_consumed_total") >= n
                       or done(), 120, f"{target} label messages consumed", (worker,))  # fmt: skip
        finally:
            worker.stop(signal.SIGKILL)
        if done():
            break
        kills.append((target, {p: int(h[b"offset"]) for p, h in stored_state(killed, killed.topic_labels).items()}))
    assert len(kills) == 4, f"only {len(kills)} kills before the labels ran out"
    assert sum(1 for _, offsets in kills if offsets) >= 2, f"most kills came before any label checkpoint: {kills}"
    run_until(killed, done, "the labels to be applied")
    want, got = stored_state(straight, straight.topic_labels), stored_state(killed, killed.topic_labels)
    assert got == want, state_differences(got, want)
    ids, reference = [a["alert_id"] for a in alerts(killed)], [a["alert_id"] for a in alerts(straight)]
    assert set(ids) == set(reference) and reference, kills
    print(f"kill points (label messages read in that life, stored label offsets): {kills}; "
          f"{len(ids)} alerts published, {len(set(ids))} distinct, as in the uninterrupted run")


def _rfc3339(seconds: float) -> str:
    from streams.alerts import rfc3339

    return rfc3339(seconds)


def test_labels_before_their_predictions_duplicates_conflicts_and_unknown_ids(kafka_bootstrap: str,
                                                                               redis_url: str) -> None:
    """Through a worker: labels sent before their events wait and join (the retry timer, no labels after
    them), one sent twice is applied once, a different second one is a conflict, an unknown id waits."""
    config = isolated_settings(kafka_bootstrap, redis_url, "early", topic_partitions=2, label_retry_interval=0.5)
    events, labels = WORLDS["churn"][0][:300], WORLDS["churn"][1][:300]
    twice = [dict(labels[0]), dict(labels[1], label=1 - labels[1]["label"]), {**labels[2], "event_id": "nobody"}]
    producer = Producer(config.confluent_config())
    for start in range(0, 300, 50):
        producer.produce(config.topic_labels, key=b"churn", value=orjson.dumps(labels[start : start + 50]))
    producer.produce(config.topic_labels, key=b"churn", value=orjson.dumps(twice))
    producer.flush(30)
    worker = WorkerProcess(config)
    try:
        wait_until(lambda: worker.metric("driftstream_labels_total", {"model": "churn", "outcome": "waiting"}) >= 301,
                   120, "the labels to wait for their predictions", (worker,))  # fmt: skip
        assert worker.metric("driftstream_labels_total", {"model": "churn", "outcome": "joined"}) == 0
        for start in range(0, 300, 100):
            producer.produce(config.topic_events, key=b"churn", value=orjson.dumps(events[start : start + 100]))
        producer.flush(30)
        wait_until(lambda: worker.metric("driftstream_labels_total", {"model": "churn", "outcome": "joined"}) >= 300,
                   120, "the waiting labels to join", (worker,))  # fmt: skip
        counts = {outcome: worker.metric("driftstream_labels_total", {"model": "churn", "outcome": outcome})
                  for outcome in ("joined", "duplicate", "conflict", "waiting", "unmatched", "overflow")}  # fmt: skip
        assert counts == {"joined": 300, "duplicate": 1, "conflict": 1, "waiting": 301, "unmatched": 0,
                          "overflow": 0}, counts  # fmt: skip
        assert worker.metric("driftstream_labels_waiting", {"model": "churn"}) == 1  # "nobody" still waits
        assert worker.metric("driftstream_predictions_stored_total", {"model": "churn"}) == 300
        assert worker.metric("driftstream_label_coverage_ratio", {"model": "churn"}) == 1.0
    finally:
        assert worker.stop() == 0, worker.tail()
