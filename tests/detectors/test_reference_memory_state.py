"""What a worker keeps per monitored column once its references are built: no hidden copies."""

from __future__ import annotations

import tracemalloc

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scipy import special

from detectors.monitors import multivariate
from detectors.reference import NumericReference
from streams.metrics import DriftSeries, Metrics

KEYS = [("fraud", "", "", "amount", "ks"), ("fraud", "", "eu", "amount", "psi"),
        ("churn", "2", "", "__prediction__", "ks"), ('odd"}\nname', "", "", "x", "adwin")]  # fmt: skip


def test_folded_sums_own_their_memory() -> None:
    rows = np.random.default_rng(2).standard_normal((1000, 75))
    total = multivariate._fold_rows(np.zeros(75), rows)
    # A view of the last running sum would keep all 1001 x 75 of them (600 KB) alive.
    assert total.base is None and total.nbytes == 75 * 8
    np.testing.assert_array_equal(total, np.cumsum(np.vstack((np.zeros((1, 75)), rows)), axis=0)[-1])


def test_normal_scores_keep_no_array_on_the_reference() -> None:
    values = np.random.default_rng(3).standard_normal(5000)
    reference = NumericReference.build(values, 10)
    before = dict(vars(reference))
    scores = reference.normal_scores(values[:100])
    assert vars(reference).keys() == before.keys()  # nothing cached beside items and weights
    ranks = (np.cumsum(reference.weights) - reference.weights / 2) / reference.weights.sum()
    edge = 0.5 / reference.weights.sum()
    expected = np.interp(values[:100], reference.items, ranks, left=edge, right=1 - edge)
    np.testing.assert_array_equal(scores, special.ndtri(np.clip(expected, edge, 1 - edge)))


def _exported(registry: CollectorRegistry) -> str:
    lines = []
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        lines += [f"# {family.name} {family.type} {family.documentation}"]
        lines += sorted(f"{s.name} {sorted(s.labels.items())} {s.value!r}" for s in family.samples)
    return "\n".join(lines)


def test_drift_series_export_what_labelled_gauges_did() -> None:
    gauges = CollectorRegistry()
    statistic = Gauge(*DriftSeries.STATISTIC, DriftSeries.LABELS, registry=gauges)
    threshold = Gauge(*DriftSeries.THRESHOLD, DriftSeries.LABELS, registry=gauges)
    metrics = Metrics(CollectorRegistry())
    for round_ in range(3):
        statistics = {key: 0.1 * i + round_ for i, key in enumerate(KEYS)}
        lines = {key: 0.5 * i for i, key in enumerate(KEYS) if i != 1}  # a statistic without a line
        for gauge, values in ((statistic, statistics), (threshold, lines)):
            for key, value in values.items():
                gauge.labels(*key).set(value)
        metrics.set_drift(statistics, lines)
    drift_only = CollectorRegistry()
    drift_only.register(metrics.drift)
    assert _exported(drift_only) == _exported(gauges)
    # Forgetting counts a key's statistic and line apart, as removing the gauges' children did.
    assert metrics.forget_models({"fraud"}) >= 3
    statistic.remove(*KEYS[0]), statistic.remove(*KEYS[1]), threshold.remove(*KEYS[0])
    assert metrics.forget_version("churn", "2") == 2
    statistic.remove(*KEYS[2]), threshold.remove(*KEYS[2])
    assert _exported(drift_only) == _exported(gauges)
    assert metrics.registry.get_sample_value("driftstream_drift_statistic", dict(zip(DriftSeries.LABELS, KEYS[3],
                                                                                      strict=True))) == 2.3  # fmt: skip


def test_drift_series_cost_a_fraction_of_labelled_gauges() -> None:
    keys = [(f"m{i // 600}", "", "", f"f{i % 100}", ("ks", "psi", "adwin", "page_hinkley", "null_rate", "wasserstein")
             [i % 6]) for i in range(6000)]  # fmt: skip
    values = {key: 0.5 for key in keys}

    def allocated(fill: object) -> int:
        tracemalloc.start()
        kept = fill()  # type: ignore[operator]
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert kept is not None
        return size

    def gauges() -> object:
        registry = CollectorRegistry()
        pair = [Gauge(*DriftSeries.STATISTIC, DriftSeries.LABELS, registry=registry),
                Gauge(*DriftSeries.THRESHOLD, DriftSeries.LABELS, registry=registry)]  # fmt: skip
        for gauge in pair:
            for key, value in values.items():
                gauge.labels(*key).set(value)
        return pair

    def series() -> object:
        drift = DriftSeries(CollectorRegistry())
        drift.set(values, values)
        return drift

    assert allocated(series) * 3 < allocated(gauges)
