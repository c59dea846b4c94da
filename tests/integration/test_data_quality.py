"""Broken pipelines and hidden drift through a real broker, redis-server and worker.

One worker runs seven models side by side: a stable one, and one per breakage (a column that
disappears, a unit change x1000, an outlier burst, a correlation flip, strings and a new column,
a broken constraint), each starting at event 12,000 of 16,000. Every check fires on its scenario
and the stable model stays quiet; the correlation flip is caught by ``pca_reconstruction`` alone.
A second worker shows freshness: silence fires, traffic resolves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from tests.integration import harness
from tests.integration.harness import WorkerProcess, alerts_of, isolated_settings, wait_until

pytestmark = pytest.mark.integration

EVENTS, CHANGE, ENVELOPE = 16_000, 12_000, 100
START = float(int(time.time()))  # event times: one every 10 ms from now
MODELS = ("stable", "gone", "unit", "burst", "flip", "kinds", "constrained")


def model_rows(model: str, seed: int) -> Iterator[dict[str, Any]]:
    """Events of ``model``: x1, x2 correlated 0.8, f1..f3 independent, c0 a category, amount >= 0."""
    rng = np.random.default_rng(seed)
    for index in range(EVENTS):
        after = index >= CHANGE
        x1 = float(rng.normal())
        rho = -0.8 if after and model == "flip" else 0.8
        x2 = rho * x1 + float(np.sqrt(1 - rho**2) * rng.normal())
        f1, f2, f3 = float(rng.normal(10.0, 2.0)), float(rng.lognormal(0.0, 0.5)), float(rng.normal())
        features: dict[str, Any] = {"x1": x1, "x2": x2, "f1": f1, "f2": f2, "f3": f3,
                                    "c0": "abcd"[int(rng.integers(4))], "amount": float(rng.exponential(20.0))}
        if after and model == "gone":
            del features["f2"]
        if after and model == "unit":
            features["f1"] = f1 * 1000.0
        if model == "burst" and CHANGE <= index < CHANGE + 2000 and rng.random() < 0.05:
            features[("f1", "f3", "x1")[int(rng.integers(3))]] = 1e6
        if after and model == "kinds":
            features["f3"] = f"{f3:.3f}"  # a number sent as text
            features["extra"] = float(rng.normal())  # a column the reference never had
        if after and model == "constrained" and rng.random() < 0.2:
            features["amount"] = -features["amount"]
        yield {"model": model, "model_version": "1", "features": features, "timestamp": START + index * 0.01}


def produce_models(settings: Any) -> int:
    producer = Producer(settings.confluent_config())
    streams = {model: model_rows(model, seed) for seed, model in enumerate(MODELS)}
    messages = 0
    for _ in range(EVENTS // ENVELOPE):
        for model, rows in streams.items():
            envelope = [next(rows) for _ in range(ENVELOPE)]
            producer.produce(settings.topic_events, key=model.encode(), value=orjson.dumps(envelope))
            messages += 1
        producer.poll(0)
    assert producer.flush(30) == 0
    return messages


def test_each_check_fires_on_its_breakage_and_the_stable_model_stays_quiet(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    config_file = tmp_path / "driftstream.toml"
    config_file.write_text("[models.constrained.constraints.amount]\nmin = 0\nnot_null = true\n")
    worker_env = harness.worker_env
    monkeypatch.setattr(harness, "worker_env", lambda s: {**worker_env(s), "DRIFTSTREAM_CONFIG": str(config_file)})
    settings = isolated_settings(kafka_bootstrap, redis_url, "quality", topic_partitions=2)
    worker = WorkerProcess(settings)
    try:
        messages = produce_models(settings)
        worker.wait_consumed(messages)
        wait_until(lambda: any(a["detector"] == "pca_reconstruction" for a in alerts_of(settings)), 60,
                   "the correlation flip's alert", (worker,))  # fmt: skip
        alerts = alerts_of(settings)
    finally:
        worker.stop()
    firing = [a for a in alerts if a["status"] == "firing"]
    for alert in firing:
        print(alert["model"], alert["type"], alert["severity"], alert["feature"], alert["detector"],
              round(alert["statistic"], 4), round(alert["threshold"], 4), "|", alert["message"])
    by_model: dict[str, set[tuple[str, str | None, str]]] = {model: set() for model in MODELS}
    for alert in firing:
        by_model[alert["model"]].add((alert["type"], alert["feature"], alert["detector"]))
    assert by_model["stable"] == set()
    assert ("data_quality", "f2", "missing_feature") in by_model["gone"]
    assert ("data_quality", "f1", "out_of_range") in by_model["unit"]
    assert ("data_quality", None, "outliers") in by_model["burst"]
    assert {detector for _, _, detector in by_model["flip"]} == {"pca_reconstruction"}  # no univariate test sees it
    assert ("data_quality", "f3", "kind_change") in by_model["kinds"]
    assert ("data_quality", "extra", "new_feature") in by_model["kinds"]
    assert ("data_quality", "amount", "constraint") in by_model["constrained"]
    # Every alert fired after its breakage began, and the burst's outliers resolved once it ended.
    assert all(datetime.fromisoformat(a["window"]["end"]).timestamp() >= START + CHANGE * 0.01 for a in firing)
    assert any(a["detector"] == "outliers" and a["status"] == "resolved" for a in alerts)
    messages_of = {(a["model"], a["detector"]): a["message"] for a in firing}
    assert "f2" in messages_of[("gone", "missing_feature")]
    assert "f3" in messages_of[("kinds", "kind_change")] and "string" in messages_of[("kinds", "kind_change")]


def test_a_silent_model_gets_a_freshness_alert_that_traffic_resolves(kafka_bootstrap: str, redis_url: str) -> None:
    settings = isolated_settings(kafka_bootstrap, redis_url, "fresh", stale_after=3.0)
    producer = Producer(settings.confluent_config())

    def send(model: str, count: int) -> None:
        rows = model_rows("stable", 1)
        for _ in range(count // ENVELOPE):
            envelope = [next(rows) | {"model": model} for _ in range(ENVELOPE)]
            producer.produce(settings.topic_events, key=model.encode(), value=orjson.dumps(envelope))
        assert producer.flush(10) == 0

    worker = WorkerProcess(settings)
    try:
        send("quiet", 1000)
        worker.wait_consumed(10)

        def freshness(status: str) -> list[dict[str, Any]]:
            return [a for a in alerts_of(settings) if a["detector"] == "freshness" and a["status"] == status]

        wait_until(lambda: bool(freshness("firing")), 30, "the freshness alert", (worker,))
        assert not freshness("resolved")
        send("quiet", 200)
        wait_until(lambda: bool(freshness("resolved")), 30, "its resolution", (worker,))
        (fired,), (resolved,) = freshness("firing"), freshness("resolved")
        lag = worker.metric("driftstream_event_lag_seconds_count", {"model": "quiet"})
    finally:
        worker.stop()
    print(fired["message"], "|", resolved["message"])
    assert (fired["type"], fired["severity"], fired["feature"], fired["model"]) == (
        "data_quality", "critical", None, "quiet")
    assert fired["statistic"] >= 3.0 and fired["threshold"] == 3.0
    assert lag == 1200
