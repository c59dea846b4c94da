"""Metrics.forget_models: every series of the given models goes, from every metric with a model label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.metrics import Metrics

MODELS = ("fraud", "churn", 'odd"}\nname')  # a label value may hold anything a producer sent


def exported(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Per metric family: the model label values on the /metrics page."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        name = family.name.removesuffix("_created")  # the text format gives a counter's _created a family
        found.setdefault(name, set()).update(s.labels["model"] for s in family.samples if "model" in s.labels)
    return found


def populate(metrics: Metrics) -> int:
    """One series per model in every labelled metric, whatever its other labels; how many metrics have a model."""
    with_model = 0
    for metric in vars(metrics).values():
        if not isinstance(metric, (Counter, Gauge, Histogram)):
            continue
        names = metric._labelnames  # the test builds series for label sets it does not hard-code
        if not names:
            continue
        with_model += "model" in names
        for model in MODELS:
            child = metric.labels(**{name: model if name == "model" else f"{name}-x" for name in names})
            if isinstance(child, Histogram):
                child.observe(1.0)
            else:
                child.inc()
    return with_model


def test_forget_models_removes_their_series_from_every_metric_with_a_model_label() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    with_model = populate(metrics)
    assert with_model >= 6  # events, invalid values, ignored features, statistic, segments, alerts...
    before = exported(registry)
    assert sum(1 for models in before.values() if models == set(MODELS)) == with_model
    assert metrics.forget_models({"fraud", MODELS[2], "never-seen"}) == 2 * with_model
    after = exported(registry)
    for name, models in after.items():
        assert models == ({"churn"} if before[name] else set()), name
    assert set(after) == set(before)  # every metric still there, labelled or not
    assert metrics.forget_models(set()) == 0
    assert metrics.forget_models({"fraud"}) == 0


def test_a_forgotten_model_comes_back_when_it_is_seen_again() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.events_consumed.labels("fraud").inc(5)
    metrics.forget_models({"fraud"})
    metrics.events_consumed.labels("fraud").inc()
    assert exported(metrics.registry)["driftstream_events_consumed"] == {"fraud"}
    value = metrics.registry.get_sample_value("driftstream_events_consumed_total", {"model": "fraud"})
    assert value == 1.0  # a new series: Prometheus reads the drop as a counter reset


def test_observe_many_counts_as_observe_one_by_one() -> None:
    import numpy as np
    import pytest

    from streams.metrics import observe_many

    values = np.random.default_rng(3).exponential(600.0, 5000)
    values[:3] = (1.0, 60.0, 2.6e6)  # on a bound (counted in it, as observe does) and past the last
    registry = CollectorRegistry()
    one = Histogram("one", "", ["model"], buckets=(1, 10, 60, 300, 3600), registry=registry)
    bulk = Histogram("bulk", "", ["model"], buckets=(1, 10, 60, 300, 3600), registry=registry)
    for value in values.tolist():
        one.labels("m").observe(value)
    observe_many(bulk.labels("m"), values)
    observe_many(bulk.labels("m"), np.array([]))
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples
           if s.name.startswith("bulk") and not s.name.endswith("_created")}  # fmt: skip
    want = {(s.name.replace("one", "bulk", 1), tuple(sorted(s.labels.items()))): s.value
            for m in registry.collect() for s in m.samples
            if s.name.startswith("one") and not s.name.endswith("_created")}  # fmt: skip
    assert want and got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_drift_series_set_through_kept_children_come_back_after_they_are_removed() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    key = ("fraud", "v1", "", "__prediction__", "ks")

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, dict(zip(("model", "version", "segment", "feature", "detector"), key,
                                                        strict=True)))  # fmt: skip

    metrics.set_drift({key: 0.3}, {key: 0.1})
    assert (value("driftstream_drift_statistic"), value("driftstream_drift_threshold")) == (0.3, 0.1)
    metrics.forget_version("fraud", "v1")
    assert value("driftstream_drift_statistic") is None
    metrics.set_drift({key: 0.4}, {})  # a kept child of a removed series would be set, unseen
    assert value("driftstream_drift_statistic") == 0.4
    metrics.forget_models(["fraud"])
    metrics.set_drift({}, {key: 0.2})
    assert (value("driftstream_drift_statistic"), value("driftstream_drift_threshold")) == (None, 0.2)
