"""Freshness: a model that has been sending falls silent, and comes back."""

from __future__ import annotations

import math

import msgpack
import pytest

from detectors import SnapshotError
from detectors.monitors.freshness import Freshness


def test_silence_fires_once_and_the_next_event_resolves_it() -> None:
    freshness = Freshness(60.0)
    assert freshness.check(1000.0) == []  # nothing heard yet: a model that never sent is not silent
    assert freshness.arrived(1000.0, 0, 99, 990.0, 999.0) == []
    assert freshness.check(1059.0) == []
    (firing,) = freshness.check(1060.5)
    assert (firing.type, firing.status, firing.severity, firing.feature, firing.detector) == (
        "data_quality", "firing", "critical", None, "freshness")
    assert firing.event_index == 99 and firing.statistic == pytest.approx(60.5) and firing.threshold == 60.0
    assert (firing.window_start, firing.window_end) == (1000.0, 1060.5)
    assert "no events for 60 s" in firing.message and "after event 99" in firing.message
    assert freshness.check(2000.0) == []  # said once
    (resolved,) = freshness.arrived(2100.0, 100, 149, 2095.0, 2099.0)
    assert (resolved.status, resolved.event_index) == ("resolved", 100)
    assert resolved.statistic == pytest.approx(1100.0)
    assert "arriving again after 1100 s of silence" in resolved.message
    assert freshness.arrived(2101.0, 150, 150, 2100.0, 2100.0) == []


def test_silence_counts_from_no_earlier_than_the_load() -> None:
    freshness = Freshness(60.0)
    freshness.arrived(1000.0, 0, 9, 999.0, 999.0)
    assert freshness.check(5000.0, not_before=4990.0) == []  # a worker catching up has not heard yet
    assert len(freshness.check(5050.0, not_before=4990.0)) == 1


def test_a_replay_from_the_snapshot_sends_the_same_alert_and_replayed_events_save_the_same_bytes() -> None:
    freshness = Freshness(30.0)
    freshness.arrived(100.0, 0, 41, 90.0, 99.0)
    saved = msgpack.packb(freshness.snapshot())
    (first,) = freshness.check(200.0)
    again = Freshness(30.0)
    again.restore(msgpack.unpackb(saved))
    assert again.check(260.0) == []  # a restarted worker has not heard from it: silence counts from its load
    (second,) = again.check(260.0, not_before=220.0)
    assert (second.event_index, second.status, second.severity, second.detector) == (
        first.event_index, first.status, first.severity, first.detector)
    restored = Freshness(30.0)
    restored.restore(msgpack.unpackb(msgpack.packb(freshness.snapshot())))
    assert msgpack.packb(restored.snapshot()) == msgpack.packb(freshness.snapshot())
    assert restored.check(300.0) == []  # firing already
    (resolved,) = restored.arrived(400.0, 42, 42, 399.0, 399.0)  # when the silence began was not saved
    assert resolved.status == "resolved" and resolved.event_index == 42 and "after a silence since event 41" in (
        resolved.message)
    heard_now, heard_later = Freshness(30.0), Freshness(30.0)
    heard_now.arrived(100.0, 0, 41, 90.0, 99.0)
    heard_later.arrived(5000.0, 0, 41, 90.0, 99.0)  # the same events applied again after a crash
    assert msgpack.packb(heard_now.snapshot()) == msgpack.packb(heard_later.snapshot())


def test_off_and_bad_values() -> None:
    freshness = Freshness(0.0)
    freshness.arrived(0.0, 0, 0, 0.0, 0.0)
    assert freshness.check(1e9) == []
    with pytest.raises(ValueError, match="stale_after"):
        Freshness(-1.0)
    with pytest.raises(ValueError, match="stale_after"):
        Freshness(math.inf)
    with pytest.raises(SnapshotError, match="freshness"):
        Freshness(1.0).restore({"last_index": 1})
