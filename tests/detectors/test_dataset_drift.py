"""Dataset drift: a model-level data_drift alert once enough input features drift critically for long enough."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest

from detectors import SnapshotError
from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import Alert, ModelBatch, ModelMonitor
from detectors.monitors.dataset import DatasetDrift

# Dataset drift counts features' alerts; the whole model's joint tests (pca_reconstruction, outliers) are off.
CONFIG = MonitorConfig(reference_size=2000, window_size=500, resolve_after=2000, dataset_drift_features=2,
                       dataset_drift_events=1000, pca_variance=0.0, outlier_sigma=0.0)  # fmt: skip


def features(n: int = 16_000, seed: int = 5) -> dict[str, np.ndarray]:
    """Four normal features: a shifts 2 std from event 4000 to 9999, b from 6000 to 11999; c and d stay."""
    rng = np.random.default_rng(seed)
    data = {name: rng.standard_normal(n) for name in "abcd"}
    data["a"][4000:10_000] += 2.0
    data["b"][6000:12_000] += 2.0
    return data


def batches(data: dict[str, np.ndarray], size: int):
    n = len(next(iter(data.values())))
    for s in range(0, n, size):
        e = min(s + size, n)
        yield ModelBatch({k: Column.from_values(v[s:e].tolist()) for k, v in data.items()},
                         np.arange(s, e, dtype=float) + 1.8e9)  # fmt: skip


def run(monitor: ModelMonitor, items) -> list[Alert]:
    alerts: list[Alert] = []
    for batch in items:
        alerts += monitor.observe(batch).alerts
    return alerts


def dataset_alerts(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.detector == "dataset"]


def test_two_features_critical_for_1000_events_fire_one_model_alert_which_resolves_with_them() -> None:
    alerts = run(ModelMonitor("m", CONFIG), batches(features(), 250))
    critical, starts = {}, {}
    for alert in alerts:
        if alert.feature and alert.type == "data_drift" and alert.status == "firing" and alert.severity == "critical":
            critical.setdefault(alert.feature, alert.event_index)
            starts.setdefault(alert.feature, alert.window_start)
    assert set(critical) == {"a", "b"}, critical  # c and d never drift
    fired, resolved = dataset_alerts(alerts)
    # Fires exactly `events` after the second feature turned critical, whatever the batches.
    assert (fired.status, fired.severity, fired.type, fired.feature) == ("firing", "critical", "data_drift", None)
    assert fired.event_index == max(critical.values()) + 1000
    assert fired.statistic == 2.0 and fired.threshold == 2.0
    assert fired.current["drifting_features"] == ["a", "b"]
    assert fired.window_start == min(starts.values())  # from the start of the data that showed them critical
    assert "2 input features in critical data drift" in fired.message and "a, b" in fired.message
    # Resolved when the first of the two resolves (a's drift ends at 10000; its alert resolves after).
    first_resolve = min(a.event_index for a in alerts
                        if a.feature and a.type == "data_drift" and a.status == "resolved")  # fmt: skip
    assert resolved.status == "resolved" and resolved.event_index == first_resolve > 10_000
    assert resolved.statistic == 1.0


@pytest.mark.parametrize("size", [1, 97, 1000, 16_000])
def test_it_fires_at_the_same_event_whatever_the_batching(size: int) -> None:
    reference = dataset_alerts(run(ModelMonitor("m", CONFIG), batches(features(), 250)))
    if size == 1:  # one event at a time is slow: only the stretch around the drift, against its own batching
        data = {k: v[:9000] for k, v in features().items()}
        ones = dataset_alerts(run(ModelMonitor("m", CONFIG), batches(data, 1)))
        assert ones == dataset_alerts(run(ModelMonitor("m", CONFIG), batches(data, 9000)))
        assert [a.event_index for a in ones] == [reference[0].event_index]
        return
    assert dataset_alerts(run(ModelMonitor("m", CONFIG), batches(features(), size))) == reference


def test_one_critical_feature_is_not_dataset_drift_and_zero_turns_it_off() -> None:
    data = features()
    data["b"] = np.random.default_rng(9).standard_normal(len(data["b"]))
    assert not dataset_alerts(run(ModelMonitor("m", CONFIG), batches(data, 500)))
    off = dataclasses.replace(CONFIG, dataset_drift_features=0)
    alerts = run(ModelMonitor("m", off), batches(features(), 500))
    assert not dataset_alerts(alerts) and {a.feature for a in alerts} == {"a", "b"}
    three = dataclasses.replace(CONFIG, dataset_drift_features=3)
    assert not dataset_alerts(run(ModelMonitor("m", three), batches(features(), 500)))


def test_a_restore_in_the_middle_continues_identically() -> None:
    data = features()
    whole = run(ModelMonitor("m", CONFIG), batches(data, 500))
    monitor = ModelMonitor("m", CONFIG)
    items = list(batches(data, 500))
    alerts = run(monitor, items[:13])  # both features critical, the 1000 events not yet over
    assert monitor.dataset.drifting and monitor.dataset.firing is None
    blob = msgpack.packb(monitor.snapshot())
    restored = ModelMonitor.restore(msgpack.unpackb(blob), CONFIG)
    assert restored.dataset.drifting == monitor.dataset.drifting
    assert alerts + run(restored, items[13:]) == whole


def test_a_snapshot_from_before_dataset_drift_restores_with_nothing_drifting() -> None:
    monitor = ModelMonitor("m", CONFIG)
    run(monitor, batches({k: v[:3000] for k, v in features().items()}, 500))
    data = monitor.snapshot()
    del data["dataset"]
    restored = ModelMonitor.restore(data, CONFIG)
    assert restored.dataset.drifting == {} and restored.dataset.firing is None


def test_malformed_state_is_refused() -> None:
    with pytest.raises(SnapshotError, match="dataset drift"):
        DatasetDrift(2, 10).restore({"drifting": [["a", "ks", "x", 1.0]], "firing": None})
    with pytest.raises(ValueError, match="features must be >= 0"):
        DatasetDrift(-1, 10)
    with pytest.raises(ValueError, match="dataset_drift_events must be >= 0"):
        MonitorConfig(dataset_drift_events=-1)


def test_it_reads_alerts_per_incident_and_per_detector_alike() -> None:
    def alert(status: str, severity: str, detector: str, detectors: tuple[str, ...] = ()) -> Alert:
        return Alert("data_drift", status, severity, "a", detector, 1.0, 0.5, None, 10, 100, 5.0, 9.0, {}, {}, "",
                     detectors=detectors or (detector,))  # fmt: skip

    index, times = np.arange(10, 20), np.arange(10, 20, dtype=float)
    per_detector = DatasetDrift(1, 0)
    per_detector.observe([alert("firing", "critical", "ks"), alert("firing", "critical", "psi")], index, times)
    per_detector.observe([alert("resolved", "critical", "ks")], index, times)
    assert per_detector.drifting == {"a": {"psi": (10, 5.0)}} and per_detector.firing is not None
    incident = DatasetDrift(1, 0)
    incident.observe([alert("firing", "warning", "adwin"), alert("firing", "critical", "ks", ("adwin", "ks"))],
                     index, times)  # fmt: skip
    assert incident.drifting == {"a": {"ks": (10, 5.0)}}
    (resolved,) = incident.observe([alert("resolved", "critical", "adwin", ("adwin", "ks"))], index, times)
    assert resolved.status == "resolved" and incident.drifting == {}


def test_segment_and_quality_alerts_do_not_count() -> None:
    def alert(feature: str | None, kind: str = "data_drift", segment: dict[str, str] | None = None) -> Alert:
        return Alert(kind, "firing", "critical", feature, "ks", 1.0, 0.5, None, 10, 100, 0.0, 1.0, {}, {}, "",
                     segment=segment)  # fmt: skip

    tracker = DatasetDrift(2, 0)
    index, times = np.arange(10, 20), np.arange(10, 20, dtype=float)
    noise = [alert("a", segment={"region": "eu"}), alert(None, "prediction_drift"), alert("b", "data_quality")]
    assert tracker.observe([*noise, alert("a")], index, times) == [] and list(tracker.drifting) == ["a"]
    (fired,) = tracker.observe([alert("c")], index, times)
    assert fired.event_index == 10 and fired.current["drifting_features"] == ["a", "c"]
