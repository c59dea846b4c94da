"""One alert per incident: the detectors that agree on one column fire, escalate and resolve as one."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest

from detectors import SnapshotError
from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import Alert, ModelBatch, ModelMonitor
from detectors.policy import AlertPolicy
from streams.alerts import alert_id, to_wire

CONFIG = MonitorConfig(reference_size=2000, window_size=500, resolve_after=2000)
PER_DETECTOR = dataclasses.replace(CONFIG, alert_per_detector=True)
ALL = ("adwin", "ks", "page_hinkley", "psi")


def drift_and_back(n: int = 14_000, seed: int = 3, missing: bool = False) -> list:
    """Normal values, shifted up one std over events 4000-7999, then normal again; a third
    missing over the shift when ``missing``."""
    values = np.random.default_rng(seed).standard_normal(n)
    values[4000:8000] += 1.0
    out: list = values.tolist()
    if missing:
        for i in range(4000, 8000, 3):
            out[i] = None
    return out


def batches(values: list, size: int, start: int = 0):
    for s in range(start, len(values), size):
        e = min(s + size, len(values))
        yield ModelBatch({"x": Column.from_values(values[s:e])}, np.arange(s, e, dtype=float) + 1.8e9)


def run(monitor: ModelMonitor, items) -> list[Alert]:
    alerts: list[Alert] = []
    for batch in items:
        alerts += monitor.observe(batch).alerts
    return alerts


def test_a_drift_caught_by_several_detectors_is_one_incident() -> None:
    alerts = run(ModelMonitor("m", CONFIG), batches(drift_and_back(), 500))
    firing = [a for a in alerts if a.status == "firing"]
    resolved = [a for a in alerts if a.status == "resolved"]
    # Fired by the first detector to see it (a change detector), escalated at most once, all
    # within the drift's first window.
    assert [a.severity for a in firing] in (["warning", "critical"], ["warning"], ["critical"]), firing
    assert firing[0].detector in ("adwin", "page_hinkley")
    assert all(4000 <= a.event_index <= 4499 for a in firing)
    per_detector = run(ModelMonitor("m", PER_DETECTOR), batches(drift_and_back(), 500))
    for alert in firing:
        assert alert.detector in alert.detectors and set(alert.detectors) <= set(ALL)
        others = [name for name in alert.detectors if name != alert.detector]
        assert alert.message.endswith(f"; also firing: {', '.join(others)}") if others else "also" not in alert.message
        # The detector named is the one whose verdict it is: statistic, line and p-value are its own.
        own = next(a for a in per_detector if (a.detector, a.event_index) == (alert.detector, alert.event_index))
        assert dataclasses.replace(own, detectors=alert.detectors, message=alert.message) == alert
    # Over when the last member resolves (the windows at 8499, the change detectors 2000 events later).
    assert len(resolved) == 1 and alerts[-1] == resolved[0]
    (end,) = resolved
    assert end.detectors == ALL and end.severity == "critical" and end.event_index > 8499
    assert end.detector in ("adwin", "page_hinkley") and "also fired during the incident" in end.message
    assert {a.type for a in alerts} == {"data_drift"} and all(a.feature == "x" for a in alerts)


def test_alert_per_detector_sends_each_detectors_own_alerts() -> None:
    alerts = run(ModelMonitor("m", PER_DETECTOR), batches(drift_and_back(), 500))
    assert all(a.detectors == (a.detector,) and "also" not in a.message for a in alerts)
    for name in ALL:  # every detector fires and resolves on its own
        statuses = [a.status for a in alerts if a.detector == name]
        assert statuses[0] == "firing" and statuses[-1] == "resolved", name
        assert statuses.count("resolved") >= 1
    assert len(alerts) > 3 * 3  # far more than the incident's three
    # The per-detector alerts are the incident-mode alerts' raw material: the same decisions, unchanged.
    incident = run(ModelMonitor("m", CONFIG), batches(drift_and_back(), 500))
    raw = {(a.detector, a.status, a.event_index, a.statistic) for a in alerts}
    assert all((a.detector, a.status, a.event_index, a.statistic) in raw for a in incident)


def test_missing_values_rising_with_a_drift_are_two_incidents() -> None:
    alerts = run(ModelMonitor("m", CONFIG), batches(drift_and_back(missing=True), 500))
    quality = [a for a in alerts if a.type == "data_quality"]
    drift = [a for a in alerts if a.type == "data_drift"]
    assert [(a.status, a.detectors) for a in quality] == [("firing", ("null_rate",)), ("resolved", ("null_rate",))]
    assert quality[1].event_index == 8499
    assert [a.status for a in drift] in (["firing", "firing", "resolved"], ["firing", "resolved"])
    assert drift[-1].detectors == ALL and drift[-1].event_index > 8499  # null_rate is not one of them
    assert all(set(a.detectors) <= set(ALL) for a in drift)
    assert len(alerts) == len(quality) + len(drift)


@pytest.mark.parametrize("size", [1, 37, 14_000])
def test_incidents_do_not_depend_on_the_batching(size: int) -> None:
    values = drift_and_back(missing=True)
    expected = run(ModelMonitor("m", CONFIG), batches(values, 500))
    monitor = ModelMonitor("m", CONFIG)
    if size == 1:  # one event at a time around the start of the drift, the rest in larger batches
        alerts = run(monitor, batches(values[:4600], 1)) + run(monitor, batches(values, 1000, start=4600))
    else:
        alerts = run(monitor, batches(values, size))
    assert alerts == expected
    reference = ModelMonitor("m", CONFIG)
    run(reference, batches(values, 500))
    assert msgpack.packb(monitor.snapshot()) == msgpack.packb(reference.snapshot())


# 9: the incident just escalated; 14: the change detectors resolved, the windows still fire;
# 17: the windows resolved, the change detectors (fired again on the way down) still fire.
@pytest.mark.parametrize("cut", [9, 14, 17])
def test_a_restore_mid_incident_continues_identically(cut: int) -> None:
    values = drift_and_back(missing=True)
    straight = ModelMonitor("m", CONFIG)
    expected = run(straight, batches(values, 500))
    first = ModelMonitor("m", CONFIG)
    alerts = run(first, batches(values[: cut * 500], 500))
    assert first.whole.features["x"].policy.incidents  # mid-incident
    blob = msgpack.packb(first.snapshot(), use_bin_type=True)
    second = ModelMonitor.restore(msgpack.unpackb(blob, raw=False), CONFIG)
    alerts += run(second, batches(values, 500, start=cut * 500))
    assert alerts == expected
    assert msgpack.packb(second.snapshot()) == msgpack.packb(straight.snapshot())


def test_the_incident_state_is_in_the_snapshot() -> None:
    monitor = ModelMonitor("m", CONFIG)
    run(monitor, batches(drift_and_back(missing=True)[:7000], 500))
    # The change detectors resolved at 6499: the drift incident remembers they fired.
    snapshot = monitor.snapshot()["scopes"][0][1]["features"]["x"]
    assert snapshot["incidents"] == {"data_quality": ["critical", ["null_rate"], ["null_rate"]],
                                     "drift": ["critical", ["ks", "psi"], list(ALL)]}  # fmt: skip


def test_a_snapshot_from_before_incidents_restores_them_from_the_firing_detectors() -> None:
    values = drift_and_back()
    straight = ModelMonitor("m", CONFIG)
    expected = run(straight, batches(values, 500))
    first = ModelMonitor("m", CONFIG)
    alerts = run(first, batches(values[:6000], 500))  # every member firing
    data = msgpack.unpackb(msgpack.packb(first.snapshot(), use_bin_type=True), raw=False)
    for monitor in data["scopes"][0][1]["features"].values():
        del monitor["incidents"]  # as a release before incidents wrote it
    second = ModelMonitor.restore(data, CONFIG)
    assert second.whole.features["x"].policy.incidents_snapshot() == {"drift": ["critical", list(ALL), list(ALL)]}
    alerts += run(second, batches(values, 500, start=6000))
    assert alerts == expected


def test_an_old_policy_snapshot_derives_its_incidents() -> None:
    # The layout AlertPolicy.snapshot() has always written: [severity, last_change, since_time, since_count].
    old = {"adwin": ["warning", 4079, 1.8e9, 12], "ks": ["critical", -1, None, 0],
           "null_rate": ["warning", -1, None, 0], "page_hinkley": [None, 4066, None, 0],
           "psi": ["warning", -1, None, 0]}  # fmt: skip
    policy = AlertPolicy.restore(old)
    assert policy.incidents_snapshot() == {"data_quality": ["warning", ["null_rate"], ["null_rate"]],
                                           "drift": ["critical", ["adwin", "ks", "psi"], ["adwin", "ks", "psi"]]}
    assert AlertPolicy.restore({"psi": ["critical", -1]}).incidents_snapshot() == {
        "drift": ["critical", ["psi"], ["psi"]]}  # version-2 model snapshots: [severity, last_change]
    assert AlertPolicy.restore(policy.snapshot(), policy.incidents_snapshot()).incidents_snapshot() == (
        policy.incidents_snapshot())


def test_the_policy_sends_what_the_incident_says() -> None:
    policy = AlertPolicy()
    assert policy.incident("adwin", "firing", "warning") == ("firing", "warning", ("adwin",))
    assert policy.incident("psi", "firing", "warning") is None  # joins at no higher severity
    assert policy.incident("ks", "firing", "critical") == ("firing", "critical", ("adwin", "ks", "psi"))
    assert policy.incident("page_hinkley", "firing", "critical") is None  # already critical
    assert policy.incident("null_rate", "firing", "warning") == ("firing", "warning", ("null_rate",))
    assert policy.incident("ks", "resolved", "critical") is None  # others still fire: no de-escalation
    assert policy.incidents["drift"].severity == "critical"
    # a round trip keeps who fired, so the end names them all
    policy = AlertPolicy.restore(policy.snapshot(), policy.incidents_snapshot())
    assert policy.incident("adwin", "resolved", "warning") is None
    assert policy.incident("psi", "resolved", "warning") is None
    assert policy.incident("page_hinkley", "resolved", "critical") == (
        "resolved", "critical", ("adwin", "ks", "page_hinkley", "psi"))
    assert policy.incident("null_rate", "resolved", "warning") == ("resolved", "warning", ("null_rate",))
    assert policy.incidents == {}
    assert policy.incident("psi", "firing", "warning") == ("firing", "warning", ("psi",))  # a new incident


@pytest.mark.parametrize("incidents", [{"drift": ["loud", ["psi"], ["psi"]]}, {"nope": ["warning", ["psi"], []]},
                                       {"drift": ["warning", [3], []]}, {"drift": ["warning"]}])  # fmt: skip
def test_malformed_incidents_are_refused(incidents: dict) -> None:
    with pytest.raises((SnapshotError, ValueError)):
        AlertPolicy.restore({"psi": ["warning", -1, None, 0]}, incidents)


def test_the_wire_carries_every_detector_of_the_incident() -> None:
    alerts = run(ModelMonitor("m", CONFIG), batches(drift_and_back(), 500))
    wire = [to_wire(a, "m", None, "events", 0, 1.8e9) for a in alerts]
    assert [w["detectors"] for w in wire] == [list(a.detectors) for a in alerts]
    assert wire[-1]["status"] == "resolved" and wire[-1]["detectors"] == list(ALL)
    assert len(wire) > 1 and len({w["alert_id"] for w in wire}) == len(wire)  # one incident's alerts, own ids
    assert [w["alert_id"] for w in wire] == [alert_id(a, "m", "events", 0) for a in alerts]
    # per detector: a list of one; the ids are those of the detector's own alert, as before incidents
    single = run(ModelMonitor("m", PER_DETECTOR), batches(drift_and_back(), 500))
    assert all(to_wire(a, "m", None, "events", 0, 0.0)["detectors"] == [a.detector] for a in single)
    legacy = dataclasses.replace(single[0], detectors=())  # an Alert built without them
    assert to_wire(legacy, "m", None, "events", 0, 0.0)["detectors"] == [legacy.detector]
    assert alert_id(legacy, "m", "events", 0) == alert_id(single[0], "m", "events", 0)


def test_an_incident_of_a_detector_the_config_dropped_still_resolves() -> None:
    """Restored under a config that no longer runs one of its members, an incident ends all the same."""
    values = drift_and_back()
    first = ModelMonitor("m", CONFIG)
    run(first, batches(values[:4500], 500))
    incident = first.whole.features["x"].policy.incidents["drift"]
    assert "page_hinkley" in incident.fired
    fewer = dataclasses.replace(CONFIG, change_detectors=("adwin",))
    second = ModelMonitor.restore(msgpack.unpackb(msgpack.packb(first.snapshot(), use_bin_type=True), raw=False),
                                  fewer)  # fmt: skip
    alerts = run(second, batches(values, 500, start=4500))
    resolved = [a for a in alerts if a.status == "resolved"]
    assert len(resolved) == 1 and not second.whole.features["x"].policy.incidents
    assert "page_hinkley" in resolved[0].detectors
