"""The inputs' schema: features that stop arriving, appear, change kind or break their constraints."""

from __future__ import annotations

import dataclasses
import math

import msgpack
import numpy as np
import pytest

from detectors import SnapshotError
from detectors.budget import window_alpha
from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import PREDICTION, Alert
from detectors.monitors.schema import Constraint, SchemaMonitor
from detectors.reference import CategoricalReference, NumericReference

ABSENT = object()  # the event does not carry the feature at all
T0 = 1.7e9
CONFIG = MonitorConfig(reference_size=2000, window_size=500)


def stable(n: int, seed: int = 0, null_share: float = 0.0) -> dict[str, list[object]]:
    """Four features of every JSON type: amount (numbers), country (strings), clicks (ints), vip (booleans);
    amount and country null in ``null_share`` of the events."""
    rng = np.random.default_rng(seed)
    amount: list[object] = rng.normal(50, 10, n).round(2).tolist()
    country: list[object] = rng.choice(["de", "fr", "it"], n).tolist()
    if null_share:
        for values in (amount, country):
            for i in np.flatnonzero(rng.random(n) < null_share).tolist():
                values[i] = None
    return {"amount": amount, "country": country, "clicks": rng.integers(1, 10, n).tolist(),
            "vip": (rng.random(n) < 0.1).tolist()}  # fmt: skip


def columns(data: dict[str, list[object]], lo: int, hi: int) -> dict[str, Column]:
    """The batch of events lo..hi: a feature no event of it carries is not in it at all."""
    out = {}
    for name, values in data.items():
        part = values[lo:hi]
        if any(value is not ABSENT for value in part):
            out[name] = Column.from_values([None if value is ABSENT else value for value in part])
    return out


def run(monitor: SchemaMonitor, data: dict[str, list[object]], size: int, lo: int = 0, hi: int | None = None
        ) -> list[Alert]:  # fmt: skip
    hi = len(next(iter(data.values()))) if hi is None else hi
    alerts: list[Alert] = []
    for start in range(lo, hi, size):
        end = min(start + size, hi)
        index = np.arange(start, end)
        alerts += monitor.observe(columns(data, start, end), index, T0 + 0.5 * index)
    return alerts


def brief(alerts: list[Alert]) -> list[tuple[int, str, str, str | None, str]]:
    return [(a.event_index, a.status, a.severity, a.feature, a.detector) for a in alerts]


def put(values: list[object], lo: int, hi: int, value: object, share: float = 1.0, seed: int = 1) -> None:
    """``value`` in ``share`` of the events lo..hi (exactly round(share x rows) of them)."""
    rows = np.random.default_rng(seed).permutation(np.arange(lo, hi))[: round(share * (hi - lo))]
    for i in rows.tolist():
        values[i] = value(i) if callable(value) else value


# -- Column.json_types --------------------------------------------------------


@pytest.mark.parametrize(("values", "types"), [
    ([1, 2, 3], [1, 1, 1]),
    ([1.5, None, math.nan], [1, 0, 0]),  # NaN is missing, as in every typed view
    (["a", None, "b"], [2, 0, 2]),
    ([True, None, False], [3, 0, 3]),  # a boolean is not a number
    ([1, "a", None, True, [1], {"k": 1}, math.nan, 2.5], [1, 2, 0, 3, 4, 4, 0, 1]),
    ([None, None], [0, 0]),
    ([], []),
])  # fmt: skip
def test_json_types_of_raw_values(values: list[object], types: list[int]) -> None:
    assert Column.from_values(values).json_types().tolist() == types
    column = Column.from_values(values)
    column.coded("categorical"), column.coded("boolean"), column.numeric()  # the typed views change nothing
    assert column.json_types().tolist() == types


def test_json_types_of_typed_columns() -> None:
    assert Column.from_numbers(np.array([1.0, np.nan, 3.0])).json_types().tolist() == [1, 0, 1]
    codes = Column.from_codes(np.array([0, -1, 1]), ["a", "b"])
    assert codes.json_types().tolist() == [2, 0, 2]
    codes.numeric()  # a numeric view of codes meets only values of another type: still strings
    assert codes.json_types().tolist() == [2, 0, 2]
    strings = Column.from_values(["a", None, "b"])
    strings.coded("categorical")
    assert strings.take(np.array([1, 2])).json_types().tolist() == [0, 2]  # the raw values were not copied
    booleans = Column.from_values([True, None, False])
    booleans.coded("boolean")
    assert booleans.take(np.array([0, 1])).json_types().tolist() == [3, 0]
    assert Column(None, 2).json_types().tolist() == [0, 0]


# -- missing_feature --------------------------------------------------------------


@pytest.mark.parametrize("alpha", [None, window_alpha(CONFIG, 0)])
def test_a_feature_that_disappears_from_events_fires_critical_and_resolves_when_it_is_back(alpha: float | None) -> None:
    data = stable(6000)
    data["amount"][3000:4000] = [ABSENT] * 1000
    alerts = run(SchemaMonitor(CONFIG, alpha=alpha), data, 250)
    assert brief(alerts) == [(3499, "firing", "critical", "amount", "missing_feature"),
                             (4499, "resolved", "critical", "amount", "missing_feature")]  # fmt: skip
    fired, resolved = alerts
    assert fired.message == ("feature 'amount' stopped arriving: absent or null in 500 of the last 500 events "
                             "(0.0% in the reference)")  # fmt: skip
    assert fired.type == "data_quality" and fired.p_value is None and fired.detectors == ("missing_feature",)
    assert (fired.statistic, fired.threshold, fired.window_count) == (1.0, 0.99, 500)
    assert (fired.window_start, fired.window_end) == (T0 + 0.5 * 3000, T0 + 0.5 * 3499)
    assert fired.reference["type"] == "number" and fired.reference["missing_share"] == 0.0
    assert fired.reference["rows"] == 2000
    assert fired.current["missing"] == 500 and fired.current["missing_share"] == 1.0
    assert resolved.statistic == 0.0 and resolved.threshold == 0.5
    assert "feature 'amount' is arriving again" in resolved.message


def test_a_feature_sent_as_null_warns_escalates_once_it_stopped_and_resolves() -> None:
    data = stable(6000, null_share=0.1)  # 10% null in the reference already
    put(data["country"], 3000, 3500, None, 0.7)
    data["country"][3500:4000] = [None] * 500
    alerts = run(SchemaMonitor(CONFIG), data, 300)
    assert brief(alerts) == [(3499, "firing", "warning", "country", "missing_feature"),
                             (3999, "firing", "critical", "country", "missing_feature"),
                             (4499, "resolved", "critical", "country", "missing_feature")]  # fmt: skip
    warning, critical, _ = alerts
    reference_share = critical.reference["missing_share"]
    assert 0.08 < reference_share < 0.12
    assert warning.threshold == pytest.approx(reference_share + 0.5)
    assert warning.statistic >= 0.7
    assert warning.message.startswith("feature 'country' is mostly missing: absent or null")
    assert critical.message == (f"feature 'country' stopped arriving: absent or null in 500 of the last 500 events "
                                f"({reference_share:.1%} in the reference)")  # fmt: skip


def test_a_rise_of_missing_values_under_the_option_stays_quiet() -> None:
    data = stable(6000)
    put(data["amount"], 3000, 6000, None, 0.4)
    assert run(SchemaMonitor(CONFIG), data, 500) == []


# -- new_feature -------------------------------------------------------------------


def test_a_new_column_warns_and_resolves_when_it_goes() -> None:
    data = stable(6000)
    data["promo_code"] = [ABSENT] * 6000
    data["promo_code"][3000:4000] = ["SPRING"] * 1000
    data["rare"] = [ABSENT] * 6000
    put(data["rare"], 3000, 4000, "x", 0.3)  # in 30% of the events: under new_feature_share
    alerts = run(SchemaMonitor(CONFIG), data, 400)
    assert brief(alerts) == [(3499, "firing", "warning", "promo_code", "new_feature"),
                             (4499, "resolved", "warning", "promo_code", "new_feature")]  # fmt: skip
    assert alerts[0].message == ("new feature 'promo_code', not in the reference schema: present in 500 of the last "
                                 "500 events (100.0%)")  # fmt: skip
    assert alerts[0].current["types"]["string"] == 500 and alerts[0].threshold == 0.5


def test_new_features_are_tracked_up_to_max_features_and_the_rest_counted() -> None:
    config = MonitorConfig(reference_size=1000, window_size=500, max_features=6)
    data = stable(3000)
    for k in range(10):  # the first seen first: new_0 from event 1000, new_1 from 1001, ...
        data[f"new_{k}"] = [ABSENT] * (1000 + k) + ["v"] * (2000 - k)
    monitor = SchemaMonitor(config)
    alerts = run(monitor, data, 250)
    assert {a.feature for a in alerts} == {f"new_{k}" for k in range(6)}
    assert all(a.event_index == 1499 for a in alerts)
    assert monitor.untracked > 0
    assert len(monitor.counts) <= 4 + 6


# -- kind_change -------------------------------------------------------------------


def test_strings_in_a_numeric_feature_warn_escalate_and_resolve() -> None:
    data = stable(6000)
    put(data["amount"], 3000, 3500, lambda i: f"{i}.00", 0.1)
    put(data["amount"], 3500, 4000, lambda i: f"{i}.00", 0.8)
    alerts = run(SchemaMonitor(CONFIG), data, 500)
    assert brief(alerts) == [(3499, "firing", "warning", "amount", "kind_change"),
                             (3999, "firing", "critical", "amount", "kind_change"),
                             (4499, "resolved", "critical", "amount", "kind_change")]  # fmt: skip
    warning, critical, resolved = alerts
    assert warning.statistic == pytest.approx(0.1) and warning.threshold == pytest.approx(0.05)
    assert critical.message == ("feature 'amount' changed kind: 400 of its 500 values in the last 500 events are "
                                "strings, it was numbers in the reference")  # fmt: skip
    assert critical.threshold == 0.5 and critical.current["most_seen"] == "string"
    assert critical.current["types"] == {"number": 100, "string": 400, "bool": 0, "other": 0}
    assert resolved.message.startswith("feature 'amount' is back to numbers: 0 of its 500 values")


def test_numbers_in_a_categorical_feature_and_strings_in_a_declared_boolean() -> None:
    data = stable(6000)
    data["country"][3000:3500] = [49] * 500
    put(data["vip"], 3000, 3500, "yes", 0.3)
    alerts = run(SchemaMonitor(CONFIG, kinds={"vip": "boolean"}), data, 500)
    assert brief(alerts) == [(3499, "firing", "critical", "country", "kind_change"),
                             (3499, "firing", "warning", "vip", "kind_change"),
                             (3999, "resolved", "critical", "country", "kind_change"),
                             (3999, "resolved", "warning", "vip", "kind_change")]  # fmt: skip
    assert alerts[0].message == ("feature 'country' changed kind: 500 of its 500 values in the last 500 events are "
                                 "numbers, it was strings in the reference")  # fmt: skip
    assert "are strings, it was booleans in the reference" in alerts[1].message


def test_a_reference_with_mixed_types_judges_the_rise_over_its_own_share() -> None:
    data = stable(6000)
    put(data["country"], 0, 6000, 7, 0.1)  # 10% numbers all along: no change
    put(data["country"], 4000, 4500, 7, 0.3, seed=2)  # ... then about 37%
    alerts = run(SchemaMonitor(CONFIG), data, 500)
    assert brief(alerts) == [(4499, "firing", "warning", "country", "kind_change"),
                             (4999, "resolved", "warning", "country", "kind_change")]  # fmt: skip
    assert alerts[0].threshold == pytest.approx(0.1 + 0.05, abs=0.015)
    assert alerts[0].message.endswith("it was strings in the reference (%.1f%% of other kinds)"
                                      % (100 * alerts[0].reference["other_share"]))


# -- constraints ---------------------------------------------------------------------


def test_a_constraint_broken_names_each_rule_and_applies_from_event_zero() -> None:
    config = MonitorConfig(reference_size=2000, window_size=1000)
    data = stable(6000)
    data["amount"][500] = -1.0  # during the reference: constraints need none
    data["amount"][3100:3130] = [-float(i) for i in range(3100, 3130)]
    data["amount"][3200:3207] = [None] * 7
    monitor = SchemaMonitor(config, constraints={"amount": Constraint(min=0, not_null=True)})
    alerts = run(monitor, data, 333)
    assert brief(alerts) == [(999, "firing", "warning", "amount", "constraint"),
                             (1999, "resolved", "warning", "amount", "constraint"),
                             (3999, "firing", "warning", "amount", "constraint"),
                             (4999, "resolved", "warning", "amount", "constraint")]  # fmt: skip
    fired = alerts[2]
    assert fired.message == ("feature 'amount' broke its constraints in 37 of the last 1000 events (3.7%, allowed 0%): "
                             "30 below min 0, 7 null")  # fmt: skip
    assert fired.current["below_min"] == 30 and fired.current["null"] == 7 and fired.current["broken"] == 37
    assert (fired.statistic, fired.threshold) == (0.037, 0.0)
    assert fired.reference["min"] == 0.0 and fired.reference["not_null"] is True
    assert alerts[3].message == ("feature 'amount' keeps its constraints again: 0 of the last 1000 events broke them "
                                 "(0.0%, allowed 0%)")  # fmt: skip
    assert monitor.statistics()[("amount", "constraint")] == (0.0, 0.0)


def test_the_message_of_the_config_example() -> None:
    config = MonitorConfig(reference_size=2000, window_size=1000)
    data = {"amount": [10.0] * 2000}
    data["amount"][1000:1030] = [-5.0] * 30
    data["amount"][1030:1037] = [None] * 7
    alerts = run(SchemaMonitor(config, constraints={"amount": Constraint(min=0, not_null=True)}), data, 100)
    assert [a.message for a in alerts] == ["feature 'amount' broke its constraints in 37 of the last 1000 events "
                                           "(3.7%, allowed 0%): 30 below min 0, 7 null"]  # fmt: skip


def test_max_min_and_values_that_are_not_numbers_break_a_range() -> None:
    data = {"amount": [10.0] * 500 + [150.0] * 20 + [-1] * 10 + ["12"] * 5 + [10.0] * 465}
    constraint = Constraint(min=0, max=100, critical_share=0.5)
    alerts = run(SchemaMonitor(CONFIG, constraints={"amount": constraint}), data, 50)
    assert brief(alerts) == [(999, "firing", "warning", "amount", "constraint")]
    assert alerts[0].message.endswith("10 below min 0, 20 above max 100, 5 not numbers")
    assert alerts[0].statistic == 35 / 500 and alerts[0].threshold == 0.0


def test_allowed_values_compare_by_text() -> None:
    data = stable(2000)
    put(data["country"], 500, 1000, "es", 0.2)
    data["clicks"] = [1, 2] * 1000
    data["clicks"][1500] = 3
    data["clicks"][1600] = "1"  # its text is allowed
    constraints = {"country": Constraint(allowed=("de", "fr", "it")), "clicks": Constraint(allowed=("1", "2")),
                   "vip": Constraint(allowed=("true", "false"))}  # fmt: skip
    alerts = run(SchemaMonitor(CONFIG, constraints=constraints), data, 500)
    assert brief(alerts) == [(999, "firing", "critical", "country", "constraint"),
                             (1499, "resolved", "critical", "country", "constraint"),
                             (1999, "firing", "warning", "clicks", "constraint")]  # fmt: skip
    assert alerts[0].message.endswith("(20.0%, allowed 0%): 100 not in the 3 allowed values")
    assert alerts[2].statistic == 1 / 500


def test_not_null_applies_to_a_feature_no_event_carries() -> None:
    monitor = SchemaMonitor(MonitorConfig(schema_checks=False, window_size=500),
                            constraints={"user_id": Constraint(not_null=True)})  # fmt: skip
    alerts = run(monitor, stable(1000), 100)
    assert brief(alerts) == [(499, "firing", "critical", "user_id", "constraint")]
    assert alerts[0].message.endswith("500 null") and alerts[0].statistic == 1.0 and alerts[0].threshold == 0.1


def test_max_share_and_critical_share() -> None:
    data = {"amount": [1.0] * 3000}
    for window, share in enumerate((0.04, 0.1, 0.3, 0.1, 0.01)):
        put(data["amount"], 500 * (window + 1), 500 * (window + 2), 500.0, share)
    constraint = Constraint(max=100, max_share=0.05, critical_share=0.2)
    monitor = SchemaMonitor(CONFIG, constraints={"amount": constraint})
    alerts = run(monitor, data, 500)
    assert brief(alerts) == [(1499, "firing", "warning", "amount", "constraint"),
                             (1999, "firing", "critical", "amount", "constraint"),
                             (2999, "resolved", "critical", "amount", "constraint")]  # fmt: skip
    assert [a.threshold for a in alerts] == [0.05, 0.2, 0.05]
    assert "allowed 5%" in alerts[0].message


@pytest.mark.parametrize(("options", "field"), [
    ({"min": 5, "max": 1}, "min"),
    ({"min": math.nan}, "min"),
    ({"max": True}, "max"),
    ({"max": 1, "max_share": 1.5}, "max_share"),
    ({"max": 1, "critical_share": -0.1}, "critical_share"),
    ({"max": 1, "max_share": 0.3, "critical_share": 0.2}, "critical_share"),
    ({"allowed": ()}, "allowed"),
    ({"allowed": ("a", "")}, "allowed"),
    ({"allowed": ("a", 1)}, "allowed"),
    ({"allowed": "abc"}, "allowed"),
    ({"not_null": "yes"}, "not_null"),
    ({}, "at least one rule"),
    ({"max_share": 0.1}, "at least one rule"),
])  # fmt: skip
def test_constraint_validation_names_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Constraint(**options)  # type: ignore[arg-type]


def test_a_constraint_from_a_config_file_is_normalized() -> None:
    constraint = Constraint(min=0, allowed=["a", "b"], max_share=0)  # type: ignore[arg-type]
    assert constraint.allowed == ("a", "b") and constraint.min == 0.0 and isinstance(constraint.max_share, float)
    assert constraint == Constraint(min=0.0, allowed=("a", "b"))


# -- a baseline's schema -------------------------------------------------------------


def test_a_baseline_gives_the_reference_schema_and_checks_start_at_event_zero() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(50, 10, 1000)
    baseline = {
        "amount": NumericReference.build(values[100:], 10, missing=100),
        "country": CategoricalReference.build(["de", "fr"] * 500, 50),
        "flag": NumericReference.build(np.ones(100), 10),  # declared boolean, sent as booleans: no kind change
        PREDICTION: NumericReference.build(values, 10),  # not an input
    }
    # amount comes as text while the types are learnt (the first 2000 events), then as numbers.
    data = {"amount": [str(v) for v in range(2500)] + list(range(2500, 4000)), "flag": [True] * 4000,
            "promo": ["x"] * 4000}  # fmt: skip
    alerts = run(SchemaMonitor(CONFIG, kinds={"flag": "boolean"}, baseline=baseline), data, 250)
    assert brief(alerts) == [(499, "firing", "critical", "country", "missing_feature"),
                             (499, "firing", "warning", "promo", "new_feature"),
                             (2999, "firing", "critical", "amount", "kind_change")]  # fmt: skip
    assert alerts[0].reference["type"] is None  # never sent: no type learnt
    assert alerts[2].message == ("feature 'amount' changed kind: 500 of its 500 values in the last 500 events are "
                                 "numbers, it was strings in the reference")  # fmt: skip
    # Its missing share and rows from the baseline, its type from the values.
    assert alerts[2].reference["type"] == "string" and alerts[2].reference["missing_share"] == 0.1
    assert alerts[2].reference["rows"] == 1000 and alerts[2].reference["types"]["string"] == 2000


def test_a_baseline_of_the_prediction_alone_leaves_the_schema_to_be_learnt() -> None:
    monitor = SchemaMonitor(CONFIG, baseline={PREDICTION: NumericReference.build(np.ones(10), 10)})
    data = stable(4000)
    data["amount"][3000:] = [ABSENT] * 1000
    assert brief(run(monitor, data, 500))[0] == (3499, "firing", "critical", "amount", "missing_feature")


# -- a long stable stream ---------------------------------------------------------------


def test_a_long_stable_stream_with_steady_missing_values_stays_quiet() -> None:
    config = MonitorConfig()
    alpha = window_alpha(config, 0)
    assert alpha is not None and alpha < 1e-6
    data = stable(300_000, seed=11, null_share=0.2)
    monitor = SchemaMonitor(config, alpha=alpha, constraints={"clicks": Constraint(min=1, max=9, not_null=True)})
    assert run(monitor, data, 1000) == []
    assert monitor.statistics() == {("clicks", "constraint"): (0.0, 0.0)}
    assert 0.19 < monitor.reference["amount"].missing_share < 0.21  # type: ignore[index]


# -- batching, snapshots ------------------------------------------------------------------


def eventful(n: int = 8000) -> dict[str, list[object]]:
    """Every check fires somewhere, in windows that straddle the batches."""
    data = stable(n, seed=4, null_share=0.05)
    data["amount"][2600:3300] = [ABSENT] * 700
    put(data["country"], 3100, 4200, None, 0.8, seed=5)
    put(data["amount"], 4100, 4900, "n/a", 0.3, seed=6)
    data["vip"][5000:5600] = [1] * 600
    for k in range(8):  # max_features 6: 2 of them are not tracked
        data[f"new_{k}"] = [ABSENT] * n
        data[f"new_{k}"][3003 + k:4400] = ["x"] * (1397 - k)
    put(data["clicks"], 0, n, 0, 0.01, seed=7)
    return data


BATCHING = MonitorConfig(reference_size=1700, window_size=400, max_features=6)  # the reference ends mid-window
CONSTRAINTS = {"clicks": Constraint(min=1, critical_share=0.05), "country": Constraint(not_null=True, max_share=0.1),
               "missing": Constraint(not_null=True)}  # fmt: skip


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_the_same_alerts_whatever_the_batching(size: int) -> None:
    def monitor() -> SchemaMonitor:
        return SchemaMonitor(BATCHING, constraints=CONSTRAINTS, alpha=1e-6)

    data = eventful()
    whole = run(monitor(), data, len(data["amount"]))
    assert {a.detector for a in whole} == {"missing_feature", "new_feature", "kind_change", "constraint"}
    assert {a.status for a in whole} == {"firing", "resolved"}
    if size == 1:  # one event at a time is slow: the first 4400 events
        whole = run(monitor(), data, 4400, hi=4400)
        assert len(whole) >= 6
        assert run(monitor(), data, 1, hi=4400) == whole
        return
    assert run(monitor(), data, size) == whole
    assert [a.event_index for a in whole] == sorted(a.event_index for a in whole)


@pytest.mark.parametrize("cut", [1100, 3290, 4150])  # while learning, mid-window while firing, ...
def test_a_restored_monitor_carries_on_identically(cut: int) -> None:
    data = eventful()
    first = SchemaMonitor(BATCHING, constraints=CONSTRAINTS, alpha=1e-6)
    run(first, data, 130, hi=cut)
    snapshot = msgpack.unpackb(msgpack.packb(first.snapshot()), raw=False)
    second = SchemaMonitor.restore(snapshot, BATCHING, constraints=CONSTRAINTS, alpha=1e-6)
    assert msgpack.packb(second.snapshot()) == msgpack.packb(first.snapshot())
    later = run(first, data, 130, lo=cut)
    assert later and run(second, data, 130, lo=cut) == later
    assert msgpack.packb(second.snapshot()) == msgpack.packb(first.snapshot())
    assert second.statistics() == first.statistics()


def test_a_snapshot_from_a_baseline_restores_with_it() -> None:
    baseline = {"amount": NumericReference.build(np.arange(100.0), 10)}
    monitor = SchemaMonitor(CONFIG, baseline=baseline)
    data = {"amount": [ABSENT] * 700 + [1.0] * 300}
    run(monitor, data, 500, hi=500)
    restored = SchemaMonitor.restore(monitor.snapshot(), CONFIG)  # the baseline's schema as saved
    assert restored.firing == {("amount", "missing_feature"): "critical"}
    assert restored.snapshot() == monitor.snapshot()
    assert not restored.rebase(baseline)
    # Rebased on no baseline between two windows: no reference until the types and schema are learnt (from
    # event 0 on), and the alert is over at the next window.
    assert restored.rebase(None)
    assert restored.reference is None and restored.reference_end == CONFIG.reference_size
    alerts = run(restored, data, 100, lo=500)
    assert brief(alerts) == [(999, "resolved", "critical", "amount", "missing_feature")]
    assert alerts[0].message == ("feature 'amount' is not judged: no reference schema is in force: absent or null "
                                 "in 200 of the last 500 events (40.0%)")  # fmt: skip


@pytest.mark.parametrize("damage", [
    lambda s: s.update(v=99),
    lambda s: s.pop("window"),
    lambda s: s.update(counts=[["amount", [1, 2]]]),
    lambda s: s.update(counts=[["amount", [1, 2, 3, 4, -5]]]),
    lambda s: s.update(firing=[["amount", "missing_feature", "fatal"]]),
    lambda s: s.update(firing=[["amount", "drift", "warning"]]),
    lambda s: s.update(window=[0, -5, None]),
    lambda s: s.update(started="yes"),
    lambda s: s.update(reference=[["amount", "abc"]]),
    lambda s: s.update(last=[["amount", "constraint", "high", 0.1]]),
])  # fmt: skip
def test_a_malformed_snapshot_is_refused(damage) -> None:
    monitor = SchemaMonitor(CONFIG, constraints=CONSTRAINTS)
    run(monitor, stable(2600), 100)
    snapshot = monitor.snapshot()
    damage(snapshot)
    with pytest.raises(SnapshotError):
        SchemaMonitor.restore(snapshot, CONFIG, constraints=CONSTRAINTS)


def test_a_restore_under_another_window_size_drops_the_window_in_progress() -> None:
    data = stable(3300)
    monitor = SchemaMonitor(CONFIG)
    run(monitor, data, 300, hi=2700)
    restored = SchemaMonitor.restore(monitor.snapshot(), dataclasses.replace(CONFIG, window_size=400))
    assert (restored.window_start, restored.window_rows, restored.next_index) == (2400, 0, 2700)
    assert restored.reference is not None and set(restored.reference) == {"amount", "country", "clicks", "vip"}
    data["amount"][2700:] = [ABSENT] * 600
    # The window 2400..2799 was not all seen: the first judged is 2800..3199.
    assert brief(run(restored, data, 100, lo=2700)) == [(3199, "firing", "critical", "amount", "missing_feature")]


def test_new_features_firing_keep_their_room_whatever_the_batching() -> None:
    config = MonitorConfig(reference_size=500, window_size=500, max_features=2)
    data = {"base": [1] * 2000, "a": [ABSENT] * 500 + ["x"] * 1500, "b": [ABSENT] * 500 + ["y"] * 1500,
            "c": [ABSENT] * 2000}  # fmt: skip
    data["a"][1000:1100] = data["b"][1000:1100] = [ABSENT] * 100  # a and b come back after c in 1000..1499
    data["c"][1000:1500] = ["z"] * 500
    alerts = run(SchemaMonitor(config), data, 500)
    assert brief(alerts) == [(999, "firing", "warning", "a", "new_feature"),
                             (999, "firing", "warning", "b", "new_feature")]  # fmt: skip
    assert run(SchemaMonitor(config), data, 1) == alerts


@pytest.mark.parametrize("data", [None, [], "schema"])
def test_a_snapshot_that_is_not_one_is_refused(data: object) -> None:
    with pytest.raises(SnapshotError):
        SchemaMonitor.restore(data, CONFIG)  # type: ignore[arg-type]


# -- typed columns, options -----------------------------------------------------------------


def test_columns_typed_by_the_producer() -> None:
    rng = np.random.default_rng(8)
    monitor = SchemaMonitor(CONFIG, constraints={"score": Constraint(max=3.0)})
    alerts: list[Alert] = []
    for start in range(0, 5000, 500):
        index = np.arange(start, start + 500)
        score = rng.normal(0, 1, 500)
        if start == 3000:
            score[:] = np.nan  # NaN is missing
        codes = rng.integers(0, 3, 500)
        segment = Column.from_codes(codes, ["a", "b", "c"])
        features = {"score": Column.from_numbers(score), "segment": segment}
        if start == 4000:  # the producer sends the score as categories
            features["score"] = Column.from_codes(codes, ["1", "2", "3"])
        alerts += monitor.observe(features, index, T0 + index)
    assert ("score", "constraint") in {(a.feature, a.detector) for a in alerts if a.event_index < 3000}
    schema = [a for a in alerts if a.detector != "constraint"]
    assert brief(schema) == [(3499, "firing", "critical", "score", "missing_feature"),
                             (3999, "resolved", "critical", "score", "missing_feature"),
                             (4499, "firing", "critical", "score", "kind_change"),
                             (4999, "resolved", "critical", "score", "kind_change")]  # fmt: skip
    assert schema[-2].message == ("feature 'score' changed kind: 500 of its 500 values in the last 500 events are "
                                  "strings, it was numbers in the reference")  # fmt: skip


def test_schema_checks_off_and_no_constraints_does_nothing() -> None:
    data = stable(3000)
    data["amount"][2500:] = [ABSENT] * 500
    monitor = SchemaMonitor(MonitorConfig(schema_checks=False, window_size=500))
    assert run(monitor, data, 500) == [] and monitor.statistics() == {}
    assert monitor.counts == {} and monitor.learning == {} and monitor.reference is None
    only = SchemaMonitor(MonitorConfig(schema_checks=False, window_size=500),
                         constraints={"amount": Constraint(not_null=True)})  # fmt: skip
    assert brief(run(only, data, 500)) == [(2999, "firing", "critical", "amount", "constraint")]


def test_statistics_are_those_of_firing_checks_and_constraints() -> None:
    data = stable(4000)
    data["amount"][3000:] = [ABSENT] * 1000
    monitor = SchemaMonitor(CONFIG, constraints={"clicks": Constraint(min=1)})
    run(monitor, data, 500)
    assert monitor.statistics() == {("amount", "missing_feature"): (1.0, 0.5), ("clicks", "constraint"): (0.0, 0.0)}


# -- the expected type is learnt from the values --------------------------------------------------


def test_a_boolean_feature_of_a_baseline_expects_the_booleans_it_is_sent() -> None:
    # A baseline knows booleans as the categories "true"/"false": the stream's JSON booleans are no kind change.
    rng = np.random.default_rng(5)
    baseline = {"amount": NumericReference.build(rng.normal(50, 10, 1000), 10),
                "country": CategoricalReference.build(["de", "fr", "it"] * 300, 10),
                "clicks": NumericReference.build(rng.integers(1, 10, 1000).astype(float), 10),
                "vip": CategoricalReference.build(["true", "false"] * 500, 10)}  # fmt: skip
    data = stable(6000)
    assert run(SchemaMonitor(CONFIG, baseline=baseline), data, 500) == []
    put(data["vip"], 3000, 3500, "yes", 0.8)  # strings where booleans were learnt: critical
    alerts = run(SchemaMonitor(CONFIG, baseline=baseline), data, 500)
    assert brief(alerts) == [(3499, "firing", "critical", "vip", "kind_change"),
                             (3999, "resolved", "critical", "vip", "kind_change")]  # fmt: skip
    assert "are strings, it was booleans in the reference" in alerts[0].message


@pytest.mark.parametrize("with_baseline", [False, True])
def test_a_categorical_feature_sent_as_numbers_expects_numbers(with_baseline: bool) -> None:
    # Declared categorical, sent as JSON numbers (ids): its values say numbers, so strings are the change.
    data = stable(6000)
    data["user_id"] = np.random.default_rng(6).integers(1000, 2000, 6000).tolist()
    baseline = {name: CategoricalReference.build(["a", "b"] * 500, 10) for name in data}  # types are learnt
    baseline["user_id"] = CategoricalReference.build([str(v) for v in data["user_id"][:1000]], 10)

    def monitor() -> SchemaMonitor:
        return SchemaMonitor(CONFIG, kinds={"user_id": "categorical"}, baseline=baseline if with_baseline else None,
                             alpha=window_alpha(CONFIG, 0))  # fmt: skip

    assert run(monitor(), data, 500) == []
    put(data["user_id"], 3000, 3500, lambda i: f"u{i}", 0.2)
    alerts = run(monitor(), data, 500)
    assert brief(alerts) == [(3499, "firing", "warning", "user_id", "kind_change"),
                             (3999, "resolved", "warning", "user_id", "kind_change")]  # fmt: skip
    assert alerts[0].reference["type"] == "number" and alerts[0].reference["other_share"] == 0.0
    assert alerts[0].threshold < 0.2


def test_with_a_baseline_kind_change_starts_once_the_types_are_learnt() -> None:
    rng = np.random.default_rng(7)
    baseline = {"amount": NumericReference.build(rng.normal(50, 10, 1000), 10),
                "gone": NumericReference.build(rng.normal(0, 1, 1000), 10)}  # fmt: skip
    data = {"amount": rng.normal(50, 10, 4000).tolist()}
    put(data["amount"], 500, 1000, "n/a", 0.3)  # while learning (up to 2000): not judged, and learnt as usual
    put(data["amount"], 2500, 3000, "n/a", 0.3, seed=2)
    alerts = run(SchemaMonitor(CONFIG, baseline=baseline), data, 300)
    assert brief(alerts) == [(499, "firing", "critical", "gone", "missing_feature"),  # from event 0
                             (2999, "firing", "warning", "amount", "kind_change"),
                             (3499, "resolved", "warning", "amount", "kind_change")]  # fmt: skip
    assert alerts[1].reference["other_share"] == pytest.approx(150 / 2000)
    # The same whatever the batching, and restored mid-learning.
    assert run(SchemaMonitor(CONFIG, baseline=baseline), data, 7) == alerts
    first = SchemaMonitor(CONFIG, baseline=baseline)
    early = run(first, data, 130, hi=1234)
    restored = SchemaMonitor.restore(msgpack.unpackb(msgpack.packb(first.snapshot()), raw=False), CONFIG)
    assert restored.learning and msgpack.packb(restored.snapshot()) == msgpack.packb(first.snapshot())
    assert early + run(restored, data, 130, lo=1234) == alerts == early + run(first, data, 130, lo=1234)
    assert msgpack.packb(restored.snapshot()) == msgpack.packb(first.snapshot())


# -- a baseline loaded while the model runs ------------------------------------------------------------


def rebasing() -> tuple[MonitorConfig, dict[str, list[object]], dict[str, object], dict[str, object]]:
    """A stream, a first baseline (with a feature never sent) and a second (without it and amount, with promo)."""
    config = MonitorConfig(reference_size=1200, window_size=400, max_features=6)
    data = stable(6000)
    data["promo"] = ["x"] * 6000
    put(data["amount"], 2400, 6000, "n/a", 0.6)
    rng = np.random.default_rng(0)
    numbers = NumericReference.build(rng.normal(50, 10, 500), 10)
    texts = CategoricalReference.build(["de", "fr"] * 100, 10)
    first = {"amount": numbers, "country": texts, "clicks": numbers, "gone": numbers,
             "vip": CategoricalReference.build(["true", "false"] * 50, 10)}  # fmt: skip
    second = {name: reference for name, reference in first.items() if name not in ("amount", "gone")}
    second["promo"] = texts
    return config, data, first, second  # type: ignore[return-value]


@pytest.mark.parametrize("cut", [3000, 3200])  # mid-window, between two windows
def test_a_rebased_monitor_and_one_restored_then_rebased_carry_on_identically(cut: int) -> None:
    config, data, first, second = rebasing()
    live = SchemaMonitor(config, baseline=first, alpha=1e-6)  # type: ignore[arg-type]
    before = run(live, data, 130, hi=cut)
    assert brief(before) == [(399, "firing", "critical", "gone", "missing_feature"),
                             (399, "firing", "warning", "promo", "new_feature"),
                             (2799, "firing", "critical", "amount", "kind_change")]  # fmt: skip
    saved = msgpack.unpackb(msgpack.packb(live.snapshot()), raw=False)
    assert live.rebase(second) and not live.rebase(second)  # type: ignore[arg-type]
    rebased = msgpack.unpackb(msgpack.packb(live.snapshot()), raw=False)
    # A worker restarting from the checkpoint before the rebase, or after it, then rebased as the model does.
    restored = SchemaMonitor.restore(saved, config, alpha=1e-6)
    assert restored.rebase(second)  # type: ignore[arg-type]
    again = SchemaMonitor.restore(rebased, config, alpha=1e-6)
    assert not again.rebase(second)  # type: ignore[arg-type]
    assert msgpack.packb(restored.snapshot()) == msgpack.packb(again.snapshot()) == msgpack.packb(live.snapshot())
    later = run(live, data, 130, lo=cut)
    assert run(restored, data, 97, lo=cut) == later and run(again, data, 1000, lo=cut) == later
    assert msgpack.packb(restored.snapshot()) == msgpack.packb(live.snapshot()) == msgpack.packb(again.snapshot())
    assert restored.statistics() == live.statistics()
    # The window in progress is judged against the first schema; the next one against the second.
    at = 3599
    assert brief(later)[:4] == [(at, "resolved", "critical", "amount", "kind_change"),
                                (at, "firing", "warning", "amount", "new_feature"),
                                (at, "resolved", "critical", "gone", "missing_feature"),
                                (at, "resolved", "warning", "promo", "new_feature")]  # fmt: skip
    messages = [a.message for a in later[:4]]
    assert messages[0].startswith("feature 'amount' is no longer in the reference schema: ")
    assert messages[2] == ("feature 'gone' is no longer in the reference schema: absent or null in 400 of the last "
                           "400 events (100.0%)")  # fmt: skip
    assert messages[3].startswith("feature 'promo' is in the reference schema now: present in 400")
    assert later[0].reference["type"] == "number"  # the learnt types stay
    assert set(live.reference or ()) == {"country", "clicks", "vip", "promo"}


def test_rebased_on_no_baseline_it_judges_against_the_learnt_schema() -> None:
    config, data, first, _ = rebasing()
    monitor = SchemaMonitor(config, baseline=first)  # type: ignore[arg-type]
    run(monitor, data, 400, hi=2000)
    assert monitor.rebase(None) and not monitor.rebase({PREDICTION: NumericReference.build(np.ones(9), 3)})
    alerts = run(monitor, data, 400, lo=2000, hi=2400)
    assert brief(alerts) == [(2399, "resolved", "critical", "gone", "missing_feature"),
                             (2399, "resolved", "warning", "promo", "new_feature")]  # fmt: skip
    assert set(monitor.reference or ()) == {"amount", "country", "clicks", "vip", "promo"}
    assert monitor.reference_rows == 1200


# -- state and metrics bounded whatever the input ------------------------------------------------------


def crowded(n: int = 3000) -> dict[str, list[object]]:
    """More new features than max_features, appearing and going at various events and densities."""
    data = stable(n, seed=9)
    rng = np.random.default_rng(10)
    for k in range(12):
        values: list[object] = [ABSENT] * n
        lo = 900 + 37 * k
        put(values, lo, min(n, lo + 700 + 53 * k), f"v{k}", 0.3 + 0.05 * k, seed=k)
        values[int(rng.integers(lo, n))] = None  # null where it is absent too
        data[f"new_{k:02d}"] = values
    return data


def test_untracked_new_features_give_the_same_snapshot_whatever_the_batching() -> None:
    config = MonitorConfig(reference_size=600, window_size=400, max_features=5)
    data = crowded()
    monitors = {size: SchemaMonitor(config, alpha=1e-6) for size in (10, 100)}
    alerts = {size: run(monitor, data, size, hi=2950) for size, monitor in monitors.items()}
    assert alerts[10] == alerts[100]
    assert monitors[10].untracked > 0
    assert msgpack.packb(monitors[10].snapshot()) == msgpack.packb(monitors[100].snapshot())


def test_statistics_report_new_features_under_one_name() -> None:
    config = MonitorConfig(reference_size=600, window_size=400, max_features=20)
    data = crowded(3200)
    monitor = SchemaMonitor(config, constraints={"clicks": Constraint(min=1)})
    keys: set[tuple[str, str]] = set()
    fired: set[str | None] = set()
    for start in range(0, 3200, 400):
        alerts = run(monitor, data, 400, lo=start, hi=start + 400)
        fired.update(a.feature for a in alerts if a.detector == "new_feature")
        keys.update(monitor.statistics())
    assert keys == {("__new__", "new_feature"), ("clicks", "constraint")}
    assert len(fired) > 1 and all(name is not None and name.startswith("new_") for name in fired)  # the real names


def test_the_new_features_statistic_is_the_largest_share_and_its_line() -> None:
    config = MonitorConfig(reference_size=500, window_size=500)
    data = {"base": [1] * 1500, "a": [ABSENT] * 1500, "b": [ABSENT] * 1500}
    put(data["a"], 500, 1000, "x", 0.6)
    put(data["b"], 500, 1000, "y", 0.8, seed=2)
    monitor = SchemaMonitor(config)
    alerts = run(monitor, data, 500, hi=1000)
    assert brief(alerts) == [(999, "firing", "warning", "a", "new_feature"),
                             (999, "firing", "warning", "b", "new_feature")]  # fmt: skip
    assert monitor.statistics() == {("__new__", "new_feature"): (0.8, 0.5)}
    run(monitor, data, 500, lo=1000)
    assert monitor.statistics() == {("__new__", "new_feature"): (0.0, 0.5)}  # both resolved


# -- constraints: defaults, numbers by value -----------------------------------------------------------


def test_critical_share_defaults_to_max_share_when_larger() -> None:
    assert Constraint(max=1, max_share=0.5).critical_share == 0.5
    assert Constraint(max=1, max_share=0.05).critical_share == 0.1 == Constraint(max=1).critical_share
    assert Constraint(max=1, max_share=0.05) == Constraint(max=1, max_share=0.05, critical_share=0.1)
    with pytest.raises(ValueError, match="critical_share must be >= max_share"):
        Constraint(max=1, max_share=0.5, critical_share=0.2)
    data = {"amount": [1.0] * 1000}
    put(data["amount"], 500, 1000, 5.0, 0.6)
    alerts = run(SchemaMonitor(CONFIG, constraints={"amount": Constraint(max=1, max_share=0.5)}), data, 100)
    assert brief(alerts) == [(999, "firing", "critical", "amount", "constraint")]
    assert alerts[0].reference["critical_share"] == 0.5 and alerts[0].threshold == 0.5


def test_allowed_numbers_compare_by_value() -> None:
    values: list[object] = [1, 1.0, 2, 2.0, "1", "2", True, False, "1.0", 3, None, "x"]
    data = {name: values * 50 for name in ("whole", "decimal", "flags")}
    constraints = {"whole": Constraint(allowed=("1", "2")),  # the config file's [1, 2]
                   "decimal": Constraint(allowed=("1.0", "2.0")),  # its [1.0, 2.0]
                   "flags": Constraint(allowed=("true", "1"))}  # fmt: skip
    monitor = SchemaMonitor(MonitorConfig(schema_checks=False, window_size=600), constraints=constraints)
    alerts = {a.feature: a for a in run(monitor, data, 600)}
    # Numbers 1, 1.0, 2, 2.0 by value; strings by text ("1", "2" for whole; "1.0" for decimal); booleans never 1.
    assert alerts["whole"].current["not_allowed"] == 50 * 5  # True, False, "1.0", 3, "x"
    assert alerts["decimal"].current["not_allowed"] == 50 * 6  # "1", "2", True, False, 3, "x"
    assert alerts["flags"].current["not_allowed"] == 50 * 7  # 2, 2.0, "2", False, "1.0", 3, "x"
    typed = Column.from_numbers(np.array([1.0, 2.0, np.nan, 3.0] * 150))
    monitor = SchemaMonitor(MonitorConfig(schema_checks=False, window_size=600),
                            constraints={"n": Constraint(allowed=("1", "2.0"))})  # fmt: skip
    alerts_typed = monitor.observe({"n": typed}, np.arange(600), T0 + np.arange(600))
    assert alerts_typed[0].current["not_allowed"] == 150  # the 3s
