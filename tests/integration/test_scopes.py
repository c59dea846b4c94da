"""Segments and versions end to end: a real broker, a real redis-server, a real worker."""

from __future__ import annotations

from pathlib import Path

import orjson
import psutil
import pytest
from confluent_kafka import Producer

from streams.settings import Settings
from streams.simulate import Drift, SegmentMix, Traffic, VersionSwitch, produce
from tests.integration import harness
from tests.integration.harness import WorkerProcess, alerts_of, isolated_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Settings:  # fmt: skip
    """Topics of its own, and a config file that slices fraud by region and churn by user."""
    config_file = tmp_path / "driftstream.toml"
    config_file.write_text('[models.fraud]\nsegments = ["region"]\n\n[models.churn]\nsegments = ["user"]\n')
    worker_env = harness.worker_env
    monkeypatch.setattr(harness, "worker_env", lambda s: {**worker_env(s), "DRIFTSTREAM_CONFIG": str(config_file)})
    return isolated_settings(kafka_bootstrap, redis_url, "sc", topic_partitions=2, reference_size=2000,
                             window_size=500)  # fmt: skip


def test_a_drift_in_one_segment_alerts_with_that_segment_only(settings: Settings) -> None:
    traffic = Traffic(
        models=("fraud",), numeric=4, categorical=0, seed=3,
        segments=(SegmentMix("region", ("eu", "us", "apac"), (0.5, 0.3, 0.2)),),
        drifts=(Drift("f2", start=8000, kind="mean_shift", magnitude=1.5, segment={"region": "eu"}),),
    )  # fmt: skip
    worker = WorkerProcess(settings)
    try:
        assert produce(settings, traffic, count=16_000, batch_size=100) == 16_000
        worker.wait_consumed(160)
        worker.wait_for(lambda: worker.metric("driftstream_events_consumed_total") == 16_000, 60, "16,000 events")
        alerts = alerts_of(settings)
        segments = worker.label_values("segment")
    finally:
        worker.stop()
    segmented = [a for a in alerts if a["segment"] is not None]
    assert {a["feature"] for a in alerts} - {None} == {"f2"}, alerts
    # The whole model's joint test may see it too (eu is half the traffic), never a segment's.
    assert all(a["segment"] is None and a["detector"] == "pca_reconstruction" for a in alerts if a["feature"] is None)
    assert segmented and {a["segment"]["region"] for a in segmented} == {"eu"}
    eu = next(a for a in segmented if a["status"] == "firing")
    assert eu["segment"] == {"region": "eu"} and "segment region=eu" in eu["message"]
    assert eu["window"]["event_index"] >= 8000
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    assert segments == {"", "region=eu", "region=us", "region=apac"}


def test_a_version_switch_starts_a_monitor_of_its_own(settings: Settings) -> None:
    traffic = Traffic(models=("fraud",), numeric=3, categorical=0, seed=4,
                      versions=(VersionSwitch(start=6000, version="2", shift=2.0),))  # fmt: skip
    worker = WorkerProcess(settings)
    try:
        assert produce(settings, traffic, count=14_000, batch_size=100) == 14_000
        worker.wait_for(lambda: worker.metric("driftstream_events_consumed_total") == 14_000, 90, "14,000 events")
        worker.wait_for(lambda: worker.metric("driftstream_drift_statistic", {"version": "2"}) != 0, 30,
                        "statistics of version 2")  # fmt: skip
        alerts = alerts_of(settings)
        versions = worker.label_values("version")
    finally:
        worker.stop()
    assert not [a for a in alerts if a["feature"] is None], alerts  # no prediction drift, on either version
    assert versions == {"", "1", "2"}


def test_a_segment_key_with_100_000_values_stays_bounded(settings: Settings) -> None:
    producer = Producer(settings.confluent_config())
    worker = WorkerProcess(settings)
    try:
        worker.wait_for(lambda: worker.metric("driftstream_ready") == 1, 60, "a ready worker")
        rss_before = psutil.Process(worker.process.pid).memory_info().rss
        for start in range(0, 100_000, 1000):
            envelope = [{"model": "churn", "features": {"x": (i % 97) / 97, "c": "abc"[i % 3]},
                         "segment": {"user": f"user-{i}"}} for i in range(start, start + 1000)]  # fmt: skip
            producer.produce(settings.topic_events, key=b"churn", value=orjson.dumps(envelope))
            producer.poll(0)
        producer.flush(30)
        worker.wait_for(lambda: worker.metric("driftstream_events_consumed_total") == 100_000, 120, "100,000 events")
        rss_after = psutil.Process(worker.process.pid).memory_info().rss
        segments = worker.label_values("segment")
        other = worker.metric("driftstream_segment_events_total", {"segment": "other"})
        tracked = worker.metric("driftstream_segment_events_total") - other
    finally:
        worker.stop()
    print(f"worker RSS {rss_before / 2**20:.0f} MB -> {rss_after / 2**20:.0f} MB over 100,000 segment values")
    assert segments is not None and len(segments - {"", "other"}) == 20
    assert other == 100_000 - 20 and tracked == 20
    assert rss_after - rss_before < 150 * 2**20
