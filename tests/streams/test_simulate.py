"""The simulator: segment mixes, segment-only drift, version switches, and a stream a seed fixes."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pytest
from scipy import stats
from typer.testing import CliRunner

from streams.cli import app
from streams.kafka import ensure_topics
from streams.settings import Settings
from streams.simulate import (
    FIRST_VERSION,
    Drift,
    SegmentMix,
    Traffic,
    VersionSwitch,
    batches,
    model_events,
    parse_segment_filter,
)
from tests.integration.harness import read_topic

REGION = SegmentMix.parse("region=eu:0.5,us:0.3,apac:0.2")
DEVICE = SegmentMix.parse("device=ios:0.6,android:0.4")


def take(traffic: Traffic, n: int, model_index: int = 0) -> list[dict[str, Any]]:
    # A fixed clock: timestamps are the only part of an event the seed does not fix.
    return list(itertools.islice(model_events(traffic, model_index, clock=lambda: 0.0), n))


def within_sampling_error(count: int, n: int, p: float) -> bool:
    # 5 binomial standard errors: the seed is fixed, so this is a bound on the generator, not a flaky test.
    return abs(count / n - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_the_segment_mix_matches_the_shares_given() -> None:
    n = 30_000
    events = take(Traffic(seed=3, segments=(REGION, DEVICE)), n)
    regions = Counter(e["segment"]["region"] for e in events)
    devices = Counter(e["segment"]["device"] for e in events)
    pairs = Counter((e["segment"]["region"], e["segment"]["device"]) for e in events)
    for value, p in {"eu": 0.5, "us": 0.3, "apac": 0.2}.items():
        assert within_sampling_error(regions[value], n, p), (value, regions)
    for value, p in {"ios": 0.6, "android": 0.4}.items():
        assert within_sampling_error(devices[value], n, p), (value, devices)
    # The keys are drawn independently: each combination has the product of the shares.
    for (region, device), count in pairs.items():
        p = dict(eu=0.5, us=0.3, apac=0.2)[region] * dict(ios=0.6, android=0.4)[device]
        assert within_sampling_error(count, n, p), ((region, device), pairs)


def test_shares_are_normalised_and_default_to_equal() -> None:
    mix = SegmentMix.parse("tier=gold:2,silver:1,bronze:1")
    assert mix.probabilities.tolist() == [0.5, 0.25, 0.25]
    assert SegmentMix.parse("tier=a,b").probabilities.tolist() == [0.5, 0.5]


def test_segments_leave_the_rest_of_the_stream_unchanged() -> None:
    """Segments draw from generators of their own: adding keys never moves features, predictions or other keys."""
    plain = take(Traffic(seed=5), 2500)
    one = take(Traffic(seed=5, segments=(REGION,)), 2500)
    two = take(Traffic(seed=5, segments=(REGION, DEVICE)), 2500)
    assert all("segment" not in e for e in plain)
    for a, b, c in zip(plain, one, two, strict=True):
        assert b.pop("segment") == {"region": c["segment"]["region"]}
        assert set(c.pop("segment")) == {"region", "device"}
        assert a == b == c


def test_a_segment_only_drift_changes_only_that_segments_values() -> None:
    start, sigma = 1700, 1.0 + 0.1 * 2  # f2's std in the generator
    base = Traffic(seed=9, segments=(REGION, DEVICE))
    drift = Drift("f2", start, "mean_shift", 1.0, segment={"region": "eu"})
    drifted = Traffic(seed=9, segments=(REGION, DEVICE), drifts=(drift,))
    changed = 0
    for i, (a, b) in enumerate(zip(take(base, 5000), take(drifted, 5000), strict=True)):
        assert a["segment"] == b["segment"] and a["prediction"] == b["prediction"]
        others = lambda e: {k: v for k, v in e["features"].items() if k != "f2"}  # noqa: E731
        assert others(a) == others(b)
        if i >= start and a["segment"]["region"] == "eu":
            assert b["features"]["f2"] == pytest.approx(a["features"]["f2"] + sigma)
            changed += 1
        else:
            assert b["features"]["f2"] == a["features"]["f2"]
    assert within_sampling_error(changed, 5000 - start, 0.5)


def test_a_drift_can_be_confined_to_a_combination_of_segment_values() -> None:
    drift = Drift("c0", 0, "null_rate", 1.0, segment={"region": "us", "device": "ios"})
    events = take(Traffic(seed=2, segments=(REGION, DEVICE), drifts=(drift,)), 3000)
    for e in events:
        in_slice = e["segment"] == {"region": "us", "device": "ios"}
        assert (e["features"]["c0"] is None) == in_slice


def test_the_version_switches_at_the_given_event_and_predictions_move() -> None:
    at = 20_500  # mid-chunk on purpose: the switch is per event, not per generated chunk
    same = Traffic(seed=4)
    switched = Traffic(seed=4, versions=(VersionSwitch(at, "v2"),))
    a, b = take(same, 30_000), take(switched, 30_000)
    assert [e["model_version"] for e in b[:at]] == [FIRST_VERSION] * at
    assert {e["model_version"] for e in b[at:]} == {"v2"}
    assert {e["model_version"] for e in a} == {FIRST_VERSION}
    assert [e["prediction"] for e in a[:at]] == [e["prediction"] for e in b[:at]]
    assert [e["features"] for e in a] == [e["features"] for e in b]  # a version moves predictions, not inputs
    before = np.array([e["prediction"] for e in b[:at]])
    after = np.array([e["prediction"] for e in b[at:]])
    assert after.mean() - before.mean() > 0.15  # a logit shift of 1 from a mean score of 0.5
    assert stats.ks_2samp(before, after).pvalue < 1e-12


def test_several_switches_and_models() -> None:
    traffic = Traffic(
        models=("fraud", "churn"),
        seed=4,
        versions=(VersionSwitch(300, "3", -1.0), VersionSwitch(100, "2"), VersionSwitch(50, "b", model="churn")),
    )
    fraud, churn = take(traffic, 400, 0), take(traffic, 400, 1)
    assert [e["model_version"] for e in fraud] == ["1"] * 100 + ["2"] * 200 + ["3"] * 100
    assert [e["model_version"] for e in churn] == ["1"] * 50 + ["b"] * 350
    plain = take(Traffic(models=("fraud", "churn"), seed=4), 400, 0)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    # Each version's score is version 1's logit plus that version's own shift (4-digit rounding aside).
    for e, p in zip(fraud[300:], plain[300:], strict=True):
        assert logit(e["prediction"]) == pytest.approx(logit(p["prediction"]) - 1.0, abs=0.01)


@pytest.mark.parametrize("count", [2500, 3001])
def test_the_stream_is_the_same_at_any_batch_size(count: int) -> None:
    traffic = Traffic(
        models=("fraud", "churn"),
        numeric=3,
        categorical=1,
        seed=12,
        segments=(REGION, DEVICE),
        drifts=(Drift("f1", 900, "variance", 2.0, segment={"region": "apac"}), Drift("c0", 1200, "category_mix")),
        versions=(VersionSwitch(1500, "v2"),),
    )
    streams = {}
    for size in (1, 37, 1000):
        per_model: dict[str, list[dict[str, Any]]] = {"fraud": [], "churn": []}
        for model, events in batches(traffic, count, size, clock=lambda: 0.0):
            assert 1 <= len(events) <= size and {e["model"] for e in events} == {model}
            per_model[model] += events
        assert {m: len(v) for m, v in per_model.items()} == {"fraud": count, "churn": count}
        streams[size] = per_model
    assert streams[1] == streams[37] == streams[1000]
    assert streams[1]["fraud"] == take(traffic, count, 0)


def test_parsing_the_command_line_forms() -> None:
    assert Drift.parse("f2:mean_shift:8000:1.5@region=eu") == Drift(
        "f2", 8000, "mean_shift", 1.5, None, {"region": "eu"}
    )
    assert Drift.parse("churn/c0:category_mix:10") == Drift("c0", 10, "category_mix", 1.0, "churn")
    assert Drift.parse("f1:null_rate:0:0.3@region=us,device=ios").segment == {"region": "us", "device": "ios"}
    assert VersionSwitch.parse("20000:v2") == VersionSwitch(20000, "v2", 1.0, None)
    assert VersionSwitch.parse("churn/5:7:-0.5") == VersionSwitch(5, "7", -0.5, "churn")
    assert parse_segment_filter("region=eu, device=ios") == {"region": "eu", "device": "ios"}
    assert SegmentMix.parse("region=eu:0.5,us:0.5") == SegmentMix("region", ("eu", "us"), (0.5, 0.5))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Drift.parse("f2:mean_shift"), "expected [MODEL/]FEATURE:KIND:START"),
        (lambda: Drift.parse("f2:mean_shift:soon"), "START must be an integer"),
        (lambda: Drift.parse("f2:wobble:10"), "kind must be one of"),
        (lambda: Drift.parse("f2:mean_shift:10@region"), "expected KEY=VALUE"),
        (lambda: VersionSwitch.parse("20000"), "expected [MODEL/]START:VERSION"),
        (lambda: VersionSwitch.parse("x:v2"), "START must be an integer"),
        (lambda: SegmentMix.parse("region"), "expected KEY=VALUE"),
        (lambda: SegmentMix.parse("region=eu:0,us:1"), "weights must be finite and > 0"),
        (lambda: SegmentMix.parse("region=eu,eu"), "distinct"),
        (lambda: Traffic(segments=(REGION, REGION)), "segment keys must be distinct"),
        (lambda: Traffic(drifts=(Drift.parse("f1:mean_shift:0@region=eu"),)), "is not one of the traffic's"),
        (lambda: Traffic(segments=(REGION,), drifts=(Drift.parse("f1:mean_shift:0@region=mars"),)), "region takes"),
        (lambda: Traffic(drifts=(Drift.parse("churn/f1:mean_shift:0"),)), "drift model 'churn'"),
        (lambda: Traffic(versions=(VersionSwitch(5, "1"),)), "must each change the version"),
        (lambda: Traffic(versions=(VersionSwitch(5, "2"), VersionSwitch(5, "3"))), "distinct events"),
        (lambda: Traffic(versions=(VersionSwitch(5, "2", model="ads"),)), "version switch model 'ads'"),
    ],
)
def test_bad_specs_say_what_is_wrong(make, message: str) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_the_command_rejects_a_bad_spec_in_one_line() -> None:
    result = CliRunner().invoke(app, ["simulate", "--count", "1", "--drift", "f2:mean_shift:80@region=eu"])
    assert result.exit_code == 2
    assert "drift segment key 'region' is not one of the traffic's []" in result.output
    result = CliRunner().invoke(app, ["simulate", "--count", "1", "--drift-segment", "region=eu"])
    assert result.exit_code == 2 and "--drift-segment needs --drift-feature" in result.output


@pytest.mark.integration
def test_the_command_sends_segments_drifts_and_versions(kafka_bootstrap: str, unique: str, monkeypatch) -> None:
    """The CLI options reach the wire: a real broker, read back."""
    topic = f"sim-{unique}"
    monkeypatch.setenv("DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("DRIFTSTREAM_TOPIC_EVENTS", topic)
    settings = Settings()
    ensure_topics(settings)
    args = ["simulate", "--count", "600", "--rate", "0", "--batch-size", "37", "--numeric", "3", "--categorical", "1",
            "--segment", "region=eu:0.5,us:0.3,apac:0.2", "--segment", "device=ios,android",
            "--drift", "f1:null_rate:100:1.0@region=eu", "--drift-feature", "c0", "--drift-kind", "null_rate",
            "--drift-start", "200", "--drift-segment", "device=ios", "--version-switch", "400:v2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sent 600 events" in result.output
    events = [e for m in read_topic(settings, topic) for e in orjson.loads(m.value())]
    events.sort(key=lambda e: int(e["event_id"].split("-")[1]))
    assert len(events) == 600
    for i, e in enumerate(events):
        assert e["model_version"] == ("v2" if i >= 400 else "1")
        assert (e["features"]["f1"] is None) == (i >= 100 and e["segment"]["region"] == "eu")
        assert (e["features"]["c0"] is None) == (i >= 200 and e["segment"]["device"] == "ios")
