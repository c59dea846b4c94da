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
    ConceptDrift,
    Drift,
    LabelDelay,
    Labeled,
    LabelPlan,
    SegmentMix,
    Traffic,
    VersionSwitch,
    batches,
    labeled_events,
    messages,
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


def test_the_command_rejects_a_bad_format_or_batch_size_before_sending() -> None:
    result = CliRunner().invoke(app, ["simulate", "--count", "1", "--format", "csv"])
    assert result.exit_code == 2 and "--format must be rows, json or arrow, got 'csv'" in result.output
    result = CliRunner().invoke(app, ["simulate", "--count", "1", "--batch-size", "10001", "--format", "arrow"])
    assert result.exit_code == 2 and "--batch-size must be 1 to max_events_per_message (10000)" in result.output


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


# -- labels ------------------------------------------------------------------------------------------------


def take_labeled(traffic: Traffic, plan: LabelPlan, n: int, model_index: int = 0) -> list[Labeled]:
    return list(itertools.islice(labeled_events(traffic, model_index, plan, clock=lambda: 0.0), n))


def errors(items: list[Labeled]) -> np.ndarray:
    """Per labeled event: the classifier (class 1 when its score > 0.5) disagrees with its label."""
    return np.array([(i.event["prediction"] > 0.5) != i.label["label"] for i in items if i.label is not None])


def counter_clock(step: float = 1.0):
    """A clock that moves ``step`` seconds at every reading: event i of one model is at i * step."""
    ticks = itertools.count()
    return lambda: next(ticks) * step


def test_labeled_events_are_seeded_and_carry_the_events_unchanged() -> None:
    traffic = Traffic(models=("fraud", "churn"), seed=6, segments=(REGION,), drifts=(Drift("f0", 100, "null_rate"),),
                      versions=(VersionSwitch(700, "v2"),))  # fmt: skip
    plan = LabelPlan(0.1, LabelDelay.parse("exp:30"), 0.8, 0.1, (ConceptDrift(500, "flip"),))
    first, again = take_labeled(traffic, plan, 2500, 1), take_labeled(traffic, plan, 2500, 1)
    assert first == again
    events = take(traffic, 2500, 1)
    for plain in (LabelPlan(), plan):
        labeled = take_labeled(traffic, plain, 2500, 1)
        assert orjson.dumps([i.event for i in labeled]) == orjson.dumps(events)
    for item in first:
        if item.label is not None:
            assert item.label == {"model": "churn", "event_id": item.event["event_id"], "label": item.label["label"],
                                  "timestamp": item.event["timestamp"] + item.delay}  # fmt: skip
            assert item.label["label"] in (0, 1) and type(item.label["label"]) is int
    assert take_labeled(Traffic(models=("fraud", "churn"), seed=7), plan, 50, 1) != first[:50]


@pytest.mark.parametrize("noise", [0.0, 0.05, 0.2])
def test_the_stable_error_rate_is_the_intended_one(noise: float) -> None:
    plan = LabelPlan(noise=noise)
    wrong = errors(take_labeled(Traffic(seed=11), plan, 30_000))
    assert within_sampling_error(int(wrong.sum()), wrong.size, plan.error_rate())
    if noise == 0.05:
        assert 0.12 < plan.error_rate() < 0.15  # inside the 5%-50% the error-stream detectors are calibrated for


def test_label_noise_flips_that_share_of_the_labels() -> None:
    traffic = Traffic(seed=3)
    clean = [i.label["label"] for i in take_labeled(traffic, LabelPlan(noise=0.0), 20_000)]  # type: ignore[index]
    noisy = [i.label["label"] for i in take_labeled(traffic, LabelPlan(noise=0.2), 20_000)]  # type: ignore[index]
    flipped = sum(a != b for a, b in zip(clean, noisy, strict=True))
    assert within_sampling_error(flipped, 20_000, 0.2)
    assert all(b == 1 - a for a, b in zip(clean, noisy, strict=True) if a != b)


@pytest.mark.parametrize("drift", [ConceptDrift(12_345), ConceptDrift(12_345, "flip"),
                                   ConceptDrift(12_345, "shift"), ConceptDrift(12_345, "rotate", 90.0)])  # fmt: skip
def test_a_concept_drift_raises_the_error_rate_from_its_event_and_leaves_the_events(drift: ConceptDrift) -> None:
    """From the drift's event (mid-chunk on purpose) the labels follow another truth; the events are byte-identical."""
    traffic, n = Traffic(seed=8), 30_000
    stable = take_labeled(traffic, LabelPlan(), n)
    drifted = take_labeled(traffic, LabelPlan(concept_drifts=(drift,)), n)
    assert orjson.dumps([i.event for i in stable]) == orjson.dumps([i.event for i in drifted])
    assert stable[: drift.start] == drifted[: drift.start]
    before, after = errors(drifted[: drift.start]), errors(drifted[drift.start :])
    plan = LabelPlan()
    assert within_sampling_error(int(before.sum()), before.size, plan.error_rate())
    assert within_sampling_error(int(after.sum()), after.size, plan.error_rate(drift))
    assert after.mean() > 0.35  # from ~13%: what concept-drift alerts must catch
    assert [i.delay for i in stable] == [i.delay for i in drifted]


def test_a_concept_drift_stays_in_its_model_and_segment() -> None:
    traffic = Traffic(models=("fraud", "churn"), seed=4, segments=(REGION,))
    drift = ConceptDrift(1000, "flip", model="churn", segment={"region": "eu"})
    stable, drifted = LabelPlan(), LabelPlan(concept_drifts=(drift,))
    assert take_labeled(traffic, stable, 5000, 0) == take_labeled(traffic, drifted, 5000, 0)
    changed = 0
    for i, (a, b) in enumerate(zip(take_labeled(traffic, stable, 5000, 1), take_labeled(traffic, drifted, 5000, 1),
                                   strict=True)):  # fmt: skip
        assert a.event == b.event
        if i < 1000 or a.event["segment"]["region"] != "eu":
            assert a.label == b.label
        else:
            changed += a.label != b.label  # a flip changes every label but where the world's noise crosses 0
    assert changed > 0.45 * 4000 * 0.9


def test_a_later_concept_drift_replaces_an_earlier_one() -> None:
    traffic = Traffic(seed=2)
    flip, back = ConceptDrift(2000, "flip"), ConceptDrift(4000, "rotate", 0.0)
    labeled = take_labeled(traffic, LabelPlan(concept_drifts=(back, flip)), 6000)
    stable = take_labeled(traffic, LabelPlan(), 6000)
    assert labeled[:2000] == stable[:2000] and labeled[4000:] == stable[4000:]
    assert errors(labeled[2000:4000]).mean() > 0.8


@pytest.mark.parametrize(
    ("spec", "mean", "low", "high"),
    [("fixed:5", 5.0, 5.0, 5.0), ("exp:30", 30.0, 0.0, math.inf), ("uniform:1:60", 30.5, 1.0, 60.0)],
)
def test_label_delays_follow_their_distribution(spec: str, mean: float, low: float, high: float) -> None:
    delay = LabelDelay.parse(spec)
    assert delay.mean == mean
    items = take_labeled(Traffic(seed=5), LabelPlan(delay=delay), 20_000)
    delays = np.array([i.delay for i in items])
    assert delays.min() >= low and delays.max() <= high
    assert all(i.label["timestamp"] == i.event["timestamp"] + i.delay for i in items)  # type: ignore[index]
    if spec.startswith("exp"):
        assert stats.kstest(delays, stats.expon(scale=30).cdf).pvalue > 1e-4
    elif spec.startswith("uniform"):
        assert stats.kstest(delays, stats.uniform(1, 59).cdf).pvalue > 1e-4
    # The delay draws from a generator of its own: it moves no label value.
    values = [i.label["label"] for i in items]  # type: ignore[index]
    assert values == [i.label["label"] for i in take_labeled(Traffic(seed=5), LabelPlan(), 20_000)]  # type: ignore[index]


def test_the_label_share_and_the_early_labels() -> None:
    n = 20_000
    items = take_labeled(Traffic(seed=9), LabelPlan(delay=LabelDelay("fixed", 10.0), share=0.7, early=0.25), n)
    labeled = [i for i in items if i.label is not None]
    assert within_sampling_error(len(labeled), n, 0.7)
    assert all(i.delay is None and not i.early for i in items if i.label is None)
    early = [i for i in labeled if i.early]
    assert within_sampling_error(len(early), len(labeled), 0.25)
    assert {i.delay for i in early} == {0.0} and {i.delay for i in labeled if not i.early} == {10.0}
    everything = take_labeled(Traffic(seed=9), LabelPlan(), n)
    assert all(a.label["label"] == b.label["label"] for a, b in zip(items, everything, strict=True) if a.label)  # type: ignore[index]


def test_labels_are_sent_once_the_clock_passes_their_time() -> None:
    """One model, event i at i seconds, labels 5 s late: label i follows the message of event i + 5."""
    traffic, plan = Traffic(seed=1), LabelPlan(delay=LabelDelay("fixed", 5.0), early=0.2)
    sent = list(messages(traffic, 300, 1, plan, 1, clock=counter_clock()))
    position: dict[tuple[str, str], int] = {}
    for k, message in enumerate(sent):
        assert len(message.values) == 1 and message.model == "fraud"
        position[(message.topic, message.values[0]["event_id"])] = k
    labels = [m.values[0] for m in sent if m.topic == "labels"]
    assert len(labels) == 300 and len({label["event_id"] for label in labels}) == 300
    early = 0
    for i in range(300):
        label, event = position[("labels", f"fraud-{i}")], position[("events", f"fraud-{i}")]
        if label < event:  # an early label: right before its event
            early += 1
            assert label == event - 1
        elif i + 5 < 300:
            after = position[("events", f"fraud-{i + 5}")]
            assert after < label < position[("events", f"fraud-{i + 6}")] if i + 6 < 300 else after < label
        else:
            assert label > position[("events", "fraud-299")]  # the events ended: sent at once
    assert within_sampling_error(early, 300, 0.2)


def test_label_batches_hold_one_models_labels_in_label_time() -> None:
    traffic = Traffic(models=("fraud", "churn"), seed=3)
    plan = LabelPlan(delay=LabelDelay("exp", 20.0), share=0.9)
    sent = list(messages(traffic, 2000, 10, plan, 25, clock=counter_clock(0.01)))
    end = max(k for k, message in enumerate(sent) if message.topic == "events")
    clock, last = -math.inf, {"fraud": -math.inf, "churn": -math.inf}
    for k, message in enumerate(sent):
        times = [value["timestamp"] for value in message.values]
        if message.topic == "events":
            clock = max(clock, *times)
            continue
        assert {value["model"] for value in message.values} == {message.model}
        assert times == sorted(times) and times[0] >= last[message.model]
        last[message.model] = times[-1]
        if k < end:  # while the events go on: full batches of labels whose time has come
            assert len(message.values) == 25 and times[-1] <= clock
        else:
            assert 1 <= len(message.values) <= 25
    per_model = Counter(value["model"] for m in sent if m.topic == "labels" for value in m.values)
    for model in ("fraud", "churn"):
        assert within_sampling_error(per_model[model], 2000, 0.9)
    assert sum(m.topic == "labels" for m in sent[:end]) > 50  # 40 s of events, labels 20 s late on average


def test_without_labels_the_messages_are_the_batches() -> None:
    traffic = Traffic(models=("fraud", "churn"), seed=3)
    plain = [("events", m, e) for m, e in batches(traffic, 500, 7, clock=lambda: 0.0)]
    assert [tuple(m) for m in messages(traffic, 500, 7, clock=lambda: 0.0)] == plain
    labeled = [tuple(m) for m in messages(traffic, 500, 7, LabelPlan(), 3, clock=lambda: 0.0) if m.topic == "events"]
    assert labeled == plain


def test_regression_predictions_and_labels() -> None:
    traffic = Traffic(seed=13, task="regression", versions=(VersionSwitch(3000, "v2", 0.5),))
    scores = take(Traffic(seed=13, versions=(VersionSwitch(3000, "v2", 0.5),)), 6000)
    drift = ConceptDrift(4000, "shift", 1.0)
    items = take_labeled(traffic, LabelPlan(noise=0.0, concept_drifts=(drift,)), 6000)
    for item, score in zip(items, scores, strict=True):
        assert item.event["features"] == score["features"]
        assert 1 / (1 + math.exp(-item.event["prediction"])) == pytest.approx(score["prediction"], abs=1e-4)
        assert isinstance(item.label["label"], float)  # type: ignore[index]
    residual = np.array([i.label["label"] - i.event["prediction"] for i in items])  # type: ignore[index]
    assert abs(residual[:3000].mean()) < 0.05 and residual[:3000].std() == pytest.approx(0.3, abs=0.03)
    assert residual[3000:4000].mean() == pytest.approx(-0.5, abs=0.05)  # v2 predicts half a sigma high
    assert residual[4000:].mean() == pytest.approx(-1.5, abs=0.05)  # and the truth moved a sigma down


def test_parsing_the_label_options() -> None:
    assert ConceptDrift.parse("8000") == ConceptDrift(8000)
    assert ConceptDrift.parse("churn/50:flip") == ConceptDrift(50, "flip", None, "churn")
    assert ConceptDrift.parse("10:shift:0.5@region=eu") == ConceptDrift(10, "shift", 0.5, None, {"region": "eu"})
    assert ConceptDrift.parse("10:rotate:45").size == 45.0 and ConceptDrift(1).size == 70.0
    assert LabelDelay.parse("fixed:5") == LabelDelay("fixed", 5.0)
    assert LabelDelay.parse("exp:30") == LabelDelay("exp", 30.0)
    assert LabelDelay.parse("uniform:1:60") == LabelDelay("uniform", 1.0, 60.0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ConceptDrift.parse("soon"), "EVENT must be an integer"),
        (lambda: ConceptDrift.parse("5:wobble"), "concept drift kind must be one of"),
        (lambda: ConceptDrift.parse("5:flip:3"), "takes no magnitude"),
        (lambda: ConceptDrift.parse("5:rotate:1:2"), "expected [MODEL/]EVENT"),
        (lambda: ConceptDrift.parse("/5"), "expected [MODEL/]EVENT"),
        (lambda: ConceptDrift.parse("-5"), "start must be >= 0"),
        (lambda: LabelDelay.parse("exp"), "expected fixed:SECONDS"),
        (lambda: LabelDelay.parse("normal:3"), "expected fixed:SECONDS"),
        (lambda: LabelDelay.parse("fixed:-1"), "must be finite and >= 0"),
        (lambda: LabelDelay.parse("uniform:9:1"), "high bound must be finite and >= 9.0"),
        (lambda: LabelPlan(noise=1.5), "label noise must be a share in [0, 1]"),
        (lambda: LabelPlan(early=-0.1), "label early must be a share"),
        (lambda: labeled_events(Traffic(numeric=0), 0, LabelPlan()), "labels need a numeric feature"),
        (lambda: labeled_events(Traffic(numeric=1), 0, LabelPlan(concept_drifts=(ConceptDrift(5),))), "needs 2"),
        (lambda: labeled_events(Traffic(), 0, LabelPlan(concept_drifts=(ConceptDrift(5, model="x"),))), "model 'x'"),
        (
            lambda: labeled_events(Traffic(), 0, LabelPlan(concept_drifts=(ConceptDrift.parse("5@region=eu"),))),
            "concept drift segment key 'region'",
        ),
        (lambda: Traffic(task="ranking"), "task must be one of"),  # type: ignore[arg-type]
        (lambda: next(messages(Traffic(), 5, labels=LabelPlan(), label_batch=0)), "label_batch must be >= 1"),
    ],
)
def test_bad_label_specs_say_what_is_wrong(make, message: str) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_the_command_wants_labels_for_label_options() -> None:
    result = CliRunner().invoke(app, ["simulate", "--count", "1", "--label-delay", "exp:5", "--concept-drift", "9"])
    assert result.exit_code == 2 and "--label-delay, --concept-drift need(s) --labels" in result.output
    result = CliRunner().invoke(app, ["simulate", "--count", "1", "--labels", "--label-delay", "exp"])
    assert result.exit_code == 2 and "expected fixed:SECONDS, exp:MEAN or uniform:LOW:HIGH" in result.output
    result = CliRunner().invoke(app, ["simulate", "--count", "1", "--labels", "--numeric", "1", "--concept-drift", "9"])
    assert result.exit_code == 2 and "needs 2 numeric features" in result.output


@pytest.mark.integration
@pytest.mark.parametrize(("models", "batch"), [("fraud", 1), ("fraud,churn", 9)])
def test_the_command_sends_labels_in_the_contracts_shape(
    kafka_bootstrap: str, unique: str, monkeypatch, models: str, batch: int
) -> None:
    """Labels reach the labels topic keyed by model, as objects (or arrays) of the contract's label event."""
    monkeypatch.setenv("DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("DRIFTSTREAM_TOPIC_EVENTS", f"sim-{unique}")
    monkeypatch.setenv("DRIFTSTREAM_TOPIC_LABELS", f"sim-labels-{unique}")
    settings = Settings()
    ensure_topics(settings)
    args = ["simulate", "--count", "400", "--rate", "0", "--models", models, "--numeric", "2", "--categorical", "0",
            "--labels", "--label-share", "0.5", "--early-labels", "0.3", "--label-delay", "uniform:0:0.01",
            "--label-batch", str(batch), "--concept-drift", "200:flip"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    events = {(e["model"], e["event_id"]): e for m in read_topic(settings, settings.topic_events)
              for e in [orjson.loads(m.value())]}  # fmt: skip
    labels = []
    for record in read_topic(settings, settings.topic_labels):
        value = orjson.loads(record.value())
        if batch == 1:
            assert isinstance(value, dict)
            value = [value]
        assert isinstance(value, list) and 1 <= len(value) <= batch
        assert {label["model"] for label in value} == {record.key().decode()}
        labels += value
    n = 400 * len(models.split(","))
    assert len(events) == n and f"sent {n} events and {len(labels)} labels" in result.output
    assert within_sampling_error(len(labels), n, 0.5)
    assert len({(label["model"], label["event_id"]) for label in labels}) == len(labels)
    for label in labels:
        assert set(label) == {"model", "event_id", "label", "timestamp"} and type(label["label"]) is int
        event = events[(label["model"], label["event_id"])]
        assert label["label"] in (0, 1) and event["timestamp"] <= label["timestamp"] <= event["timestamp"] + 0.01


@pytest.mark.integration
def test_with_the_callers_producer_every_event_is_handed_to_it(kafka_bootstrap: str, unique: str) -> None:
    """``produce`` leaves the caller's producer unflushed, but no event behind in its own buffers."""
    from confluent_kafka import Producer

    from streams.simulate import produce

    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_events=f"sim-{unique}")
    ensure_topics(settings)
    producer = Producer(settings.confluent_config())
    traffic = Traffic(("fraud",), 1, 0, 7, (), versions=(VersionSwitch.parse("5:v2"),))
    assert produce(settings, traffic, count=10, batch_size=3, producer=producer) == 10
    assert producer.flush(10) == 0
    batches = sorted([int(e["event_id"].split("-")[1]) for e in orjson.loads(m.value())]
                     for m in read_topic(settings, settings.topic_events))  # fmt: skip
    # Batches of 3 of one version: the v1 events 3, 4 and the last two v2 events go out at the end.
    assert batches == [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9]]
