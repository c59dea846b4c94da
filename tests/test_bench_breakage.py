"""Smoke test of the breakage benchmark (bench/breakage.py): a tiny plan, serial, a few seconds."""

from __future__ import annotations

from bench import breakage


def test_a_tiny_plan_detects_every_breakage_and_writes_the_report() -> None:
    plan = breakage.Plan(reps=1, stable_streams=1, stable_events=10_000, check_streams=2, check_events=10_000)
    results = breakage.run_plan(plan, seed=0, workers=1, progress=False)
    for scenario in breakage.SCENARIOS:
        (run,) = results.runs[scenario.name]
        assert run.delay is not None, f"{scenario.name}: {scenario.detector} missed"
        assert run.false_alarms == 0, scenario.name
        if scenario.key == "silent":
            assert 600 <= run.delay < 601  # stale_after, checked every whole second of simulated time
        else:
            assert run.delay >= 1000  # a window of 1000 events closes 1000 events after the change at the earliest
    assert results.stable.events == 10_000
    counts = results.check
    for check in ("missing_feature", "new_feature", "kind_change", "pca_reconstruction", "outliers",
                  *breakage.OUT_OF_RANGE_ROWS.values()):  # fmt: skip
        assert counts.judged[check] > 0, check
    assert counts.judged["pca_reconstruction"] == 2 * 10  # two streams of ten windows
    text = breakage.report(plan, results, command="python -m bench.breakage", revision="test", workers=1, elapsed=0)
    assert "## Detection" in text and "## Calibration check" in text
    assert text.count("| missing_feature |") == 3  # detection, false alarms, calibration check


def test_a_repetition_depends_on_its_seed_only() -> None:
    scenario = next(s for s in breakage.SCENARIOS if s.key == "flip")
    task = breakage.DetectionTask(scenario, rep=4, seed=1)
    assert breakage.run_detection(task) == breakage.run_detection(task)
