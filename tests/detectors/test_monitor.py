from __future__ import annotations

import msgpack
import numpy as np
import pytest

from detectors import SnapshotError
from detectors.config import MonitorConfig
from detectors.monitor import PREDICTION, ModelBatch, ModelMonitor

CONFIG = MonitorConfig(reference_size=2000, window_size=500)


def batches(n: int = 12_000, shift_from: int = 6000, size: int = 250, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = {f"x{i}": rng.standard_normal(n) for i in range(4)}
    data["x1"][shift_from:] += 1.0
    colour = rng.choice(["red", "green", "blue"], n, p=[0.6, 0.3, 0.1]).tolist()
    for start in range(0, n, size):
        columns = {name: values[start : start + size].tolist() for name, values in data.items()}
        columns["colour"] = colour[start : start + size]
        yield ModelBatch(columns, np.arange(start, start + len(columns["x0"]), dtype=float) + 1.8e9, "7")


def run(monitor: ModelMonitor, items) -> list:
    alerts = []
    for batch in items:
        alerts += monitor.observe(batch).alerts
    return alerts


def test_only_the_shifted_feature_alerts() -> None:
    monitor = ModelMonitor("m", CONFIG)
    alerts = run(monitor, batches())
    firing = [a for a in alerts if a.status == "firing"]
    assert {a.feature for a in firing} == {"x1"}
    assert {a.detector for a in firing} == {"adwin", "page_hinkley", "psi", "ks"}
    psi_alert = next(a for a in firing if a.detector == "psi")
    assert psi_alert.severity == "critical" and psi_alert.statistic >= 0.25
    assert 6000 <= psi_alert.event_index < 6500 + CONFIG.window_size
    assert psi_alert.window_count == CONFIG.window_size
    assert psi_alert.current["mean"] > psi_alert.reference["mean"] + 0.8
    assert all(a.event_index >= 6000 for a in alerts)
    assert monitor.model_version == "7"


def test_one_firing_alert_per_feature_and_detector_until_resolved() -> None:
    alerts = run(ModelMonitor("m", CONFIG), batches(n=20_000))
    psi_alerts = [(a.status, a.severity) for a in alerts if a.detector == "psi"]
    assert psi_alerts == [("firing", "critical")]  # the shift persists: no repeats, no resolve


def test_psi_alert_resolves_when_the_window_is_back_under_the_line() -> None:
    monitor = ModelMonitor("m", CONFIG)
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.standard_normal(3000), rng.standard_normal(1000) + 2, rng.standard_normal(1000)])
    alerts = run(monitor, [ModelBatch({"v": values[s : s + 500].tolist()}, np.zeros(500)) for s in range(0, 5000, 500)])
    psi = [(a.status, a.event_index) for a in alerts if a.detector == "psi"]
    # Windows close every 500 rows after the 2000 reference rows; the shift covers rows 3000-3999.
    assert psi == [("firing", 3499), ("resolved", 4499)]


def test_null_rate_jump_is_a_data_quality_alert() -> None:
    monitor = ModelMonitor("m", CONFIG)
    values: list[float | None] = np.random.default_rng(2).standard_normal(4000).tolist()
    for i in range(3000, 4000, 2):
        values[i] = None
    alerts = run(monitor, [ModelBatch({"v": values[s : s + 500]}, np.zeros(500)) for s in range(0, 4000, 500)])
    quality = [a for a in alerts if a.detector == "null_rate"]
    assert quality and quality[0].type == "data_quality" and quality[-1].severity == "critical"


def test_wrong_types_are_counted_and_treated_as_missing() -> None:
    monitor = ModelMonitor("m", CONFIG)
    observation = monitor.observe(ModelBatch({"v": [1.0, "oops", None, True, 2.0]}, np.zeros(5)))
    assert observation.invalid_values == 2
    assert monitor.features["v"].kind == "numeric"


def test_prediction_drift_has_its_own_type_and_no_feature() -> None:
    monitor = ModelMonitor("m", CONFIG)
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.random(3000) * 0.5, 0.5 + rng.random(1000) * 0.5])
    alerts = run(monitor, [ModelBatch({PREDICTION: scores[s : s + 500].tolist()}, np.zeros(500))
                           for s in range(0, 4000, 500)])  # fmt: skip
    assert alerts and all(a.type == "prediction_drift" and a.feature is None for a in alerts)


def test_features_per_model_are_bounded() -> None:
    monitor = ModelMonitor("m", MonitorConfig(max_features=3))
    observation = monitor.observe(ModelBatch({f"f{i}": [1.0] for i in range(10)}, np.zeros(1)))
    assert len(monitor.features) == 3 and observation.ignored_features == 7


def test_high_cardinality_categories_stay_bounded() -> None:
    config = MonitorConfig(reference_size=1000, window_size=1000, max_categories=20)
    monitor = ModelMonitor("m", config)
    for start in range(0, 100_000, 10_000):
        labels = [f"id-{i}" for i in range(start, start + 10_000)]
        monitor.observe(ModelBatch({"user": labels}, np.zeros(10_000)))
    feature = monitor.features["user"]
    assert feature.reference is not None and len(feature.reference.categories) == 20
    assert len(msgpack.packb(monitor.snapshot())) < 200_000


def test_snapshot_restore_continues_byte_identically() -> None:
    items = list(batches())
    straight = ModelMonitor("m", CONFIG)
    expected = run(straight, items)
    for cut in (3, 8, 25, 40):
        first = ModelMonitor("m", CONFIG)
        alerts = run(first, items[:cut])
        blob = msgpack.packb(first.snapshot(), use_bin_type=True)
        second = ModelMonitor.restore(msgpack.unpackb(blob, raw=False), CONFIG)
        alerts += run(second, items[cut:])
        assert alerts == expected
        assert msgpack.packb(second.snapshot()) == msgpack.packb(straight.snapshot())


def test_restore_refuses_unknown_versions_and_garbage() -> None:
    with pytest.raises(SnapshotError):
        ModelMonitor.restore({"v": 2}, CONFIG)
    with pytest.raises(SnapshotError):
        ModelMonitor.restore({"v": 1, "model": "m"}, CONFIG)
    with pytest.raises(SnapshotError):
        ModelMonitor.restore([1, 2], CONFIG)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"window_size": 0}, "window_size"),
        ({"psi_bins": 1}, "psi_bins"),
        ({"psi_warning": 0.3, "psi_critical": 0.2}, "psi_critical"),
        ({"adwin_delta": 2.0}, "adwin_delta"),
        ({"reference_size": "many"}, "reference_size"),
    ],
)
def test_config_errors_name_the_parameter(kwargs: dict, parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        MonitorConfig(**kwargs)
