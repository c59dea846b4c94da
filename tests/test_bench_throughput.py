"""The throughput benchmark's own logic (no broker): its data, its alert comparison, its tables."""

from __future__ import annotations

import itertools
import sys
from typing import Any

import pytest

from bench.throughput import (
    CONTENDERS,
    MODELS,
    PEERS_INSTALL,
    REFERENCE,
    WINDOW,
    Bench,
    BenchError,
    Children,
    Result,
    Workload,
    _encoder,
    compare_alerts,
    comparison_table,
    model_batches,
    peers_available,
    plan_workload,
    ratio_table,
    result_table,
)
from streams.columnar import decode_events
from streams.decode import Limits


def _workload() -> Workload:
    return Workload(features=4, batch_events=8000, single_events=4 * 1500, naive_events=0, evidently_rows=0,
                    evidently_windows=0)  # fmt: skip


def _per_model(batches: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for model, events in batches:
        out.setdefault(model, []).extend(events)
    return out


def test_every_batch_size_sends_the_same_events_with_the_same_timestamps() -> None:
    traffic = _workload().traffic
    single = _per_model(model_batches(traffic, 2500, 1, 1000.0))
    for size in (7, 1000):
        batched = list(model_batches(traffic, 2500, size, 1000.0))
        assert [model for model, _ in batched[: len(MODELS)]] == list(MODELS)  # round-robin, as simulate sends
        assert _per_model(batched) == single
    assert [e["timestamp"] for e in single["m0"][:3]] == [1000.0, 1000.001, 1000.002]


def test_the_traffic_drifts_after_the_reference_only() -> None:
    assert {d.model for d in plan_workload(20, 150_000).traffic.drifts} == set(MODELS)
    assert {d.feature for d in _workload().traffic.drifts} == {"f1", "c0", "f2"}  # of the features it has
    traffic = _workload().traffic
    assert min(d.start for d in traffic.drifts) == REFERENCE
    events = _per_model(model_batches(traffic, REFERENCE + 2000, 1000, 0.0))["m4"]  # f2: 30% missing from 5000
    assert all(e["features"]["f2"] is not None for e in events[:REFERENCE])
    assert sum(e["features"]["f2"] is None for e in events[REFERENCE:]) > 400


def test_columnar_messages_decode_to_the_events_sent() -> None:
    events = _per_model(model_batches(_workload().traffic, 100, 100, 5.0))["m4"]
    for encoding in ("columnar", "arrow"):
        encode, headers = _encoder(encoding)
        rows, block, rejections = decode_events(encode("m4", events), headers, Limits())
        assert not rows and not rejections
        assert block is not None and block.model == "m4" and len(block) == len(events)
    assert _encoder("arrow")[1] == [("content-type", b"application/vnd.apache.arrow.stream")]


def test_single_events_cover_the_reference_and_three_windows() -> None:
    plan = plan_workload(20, 150_000, quick=True)
    assert plan.single_events >= len(MODELS) * (REFERENCE + 3 * WINDOW)


def _alert(model: str, index: int, feature: str = "f1", detector: str = "psi") -> dict[str, Any]:
    return {"model": model, "model_version": "1", "segment": None, "type": "data_drift", "feature": feature,
            "detector": detector, "detectors": [detector], "status": "firing", "severity": "critical",
            "statistic": 0.4, "window": {"event_index": index, "start": "a", "end": "b"}}  # fmt: skip


def _result(key: str, alerts: list[dict[str, Any]] | None = None, events: int = 1000) -> Result:
    return Result(key, CONTENDERS[key], "m", events, 1.0, 0.5, 2**20, alerts=alerts)


def test_alerts_compared_over_the_events_every_topic_holds() -> None:
    same = [_alert("m0", 5999), _alert("m1", 5999, "c0")]
    later = [*same, _alert("m0", 9999)]  # past the single-event topic's 1500 events a model: not compared
    results = {"d": _result("d", [_alert("m0", 999)]), "e1000": _result("e1000", [_alert("m0", 999), *later])}
    comparison = compare_alerts(results, _workload())
    assert comparison is not None and comparison.same
    assert comparison.prefix == 1500 and comparison.total == {"d": 1, "e1000": 4}

    results["earrow"] = _result("earrow", [_alert("m0", 999, detector="ks")])
    comparison = compare_alerts(results, _workload())
    assert comparison is not None and not comparison.same
    assert "earrow" in comparison.verdict()
    text = "\n".join(comparison_table(comparison, results))
    assert "**no**" in text and "only in earrow: m0 v1 data_drift f1 ks firing critical at event 999" in text


def test_no_comparison_without_two_runs_with_alerts() -> None:
    assert compare_alerts({"d": _result("d", []), "a": _result("a")}, _workload()) is None


def test_tables_name_what_did_not_run_and_why() -> None:
    results = {key: _result(key, events=n) for key, n in (("earrow", 300_000), ("g", 100_000), ("e1000", 90_000))}
    rows = result_table(results, {"h": ("rows in memory", f"not installed: {PEERS_INSTALL}")})
    assert any(row.startswith("| h. NannyML") and "not installed: make bench-peers" in row for row in rows)
    ratios = "\n".join(ratio_table(results, judged=True))
    assert "| arrow (1000-event Arrow batches) | 300,000 events/s | >= 250,000 events/s | met |" in ratios
    assert "| arrow/g (worker on Arrow / whylogs profile) | 3.00 | > 1 (ahead) | met |" in ratios
    assert "NannyML UnivariateDriftCalculator did not run" in ratios
    assert "| e (1000-event JSON row envelopes) | 90,000 events/s | >= 80,000 events/s | met |" in ratios


def test_peers_without_their_venv_say_how_to_install_it() -> None:
    peers = peers_available("/nonexistent/python")
    assert set(peers.missing) == {"whylogs", "nannyml"}
    assert all(reason is not None and PEERS_INSTALL in reason for reason in peers.missing.values())


def test_workload_sizes_are_whole_envelopes() -> None:
    for features, quick in itertools.product((20, 100), (False, True)):
        plan = plan_workload(features, 300_000, quick)
        assert plan.batch_events % (len(MODELS) * 1000) == 0 and plan.peer_rows >= WINDOW


def test_a_batch_job_is_read_from_its_last_result_line(tmp_path: Any) -> None:
    bench = Bench.__new__(Bench)  # no broker or Redis: a batch job needs neither
    bench.children = Children(tmp_path)
    line = '{"rows": 2000, "seconds": 0.5, "cpu_seconds": 0.4, "max_rss": 1048576}'
    report, rss = bench.batch_job("job", "job", [sys.executable, "-c", f"print('warming up'); print('{line}')"])
    assert report["rows"] == 2000 and rss >= 1048576
    with pytest.raises(BenchError, match="printed no result"):
        bench.batch_job("job", "silent", [sys.executable, "-c", "print('no result')"])
    with pytest.raises(BenchError, match="exited with code 3"):
        bench.batch_job("job", "failing", [sys.executable, "-c", "raise SystemExit(3)"])
