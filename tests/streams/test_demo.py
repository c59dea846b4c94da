"""The demo: its traffic and worker config slice the fraud model by region, and its alert lines say where."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from streams.console import format_alert, format_request, where
from streams.demo import DEMO_CONFIG, DEMO_TRAFFIC, run_demo
from streams.settings import CONFIG_ENV, Settings
from streams.simulate import model_events


def alert(**fields: Any) -> dict[str, Any]:
    base = {
        "status": "firing", "severity": "critical", "type": "data_drift", "model": "fraud", "model_version": "2",
        "feature": "f5", "segment": None, "detector": "psi", "statistic": 0.41, "threshold": 0.25,
        "message": "f5 of fraud[region=eu] drifted",
    }  # fmt: skip
    return base | fields


def rendered(markup: str) -> str:
    """What the terminal shows: rich markup resolved, so a '[region=eu]' eaten as a style tag would show."""
    console = Console(record=True, width=200, highlight=False)
    console.print(markup)
    return console.export_text()


def test_an_alert_line_names_the_segment_and_for_the_prediction_the_version() -> None:
    assert where(alert()) == "fraud/f5"  # inputs are monitored across versions: no version shown
    assert where(alert(segment={"region": "eu"})) == "fraud[region=eu]/f5"
    assert where(alert(segment={"region": "eu", "device": "ios"})) == "fraud[region=eu,device=ios]/f5"
    assert where(alert(feature=None, type="prediction_drift")) == "fraud/prediction v2"
    prediction = {"feature": None, "type": "prediction_drift"}
    assert where(alert(**prediction, model_version="v3", segment={"region": "us"})) == "fraud[region=us]/prediction v3"
    assert where(alert(**prediction, model_version=None)) == "fraud/prediction"
    assert where(alert(feature=None, detector="dataset")) == "fraud/inputs"  # dataset drift: over the inputs
    legacy = alert()
    del legacy["segment"]  # an alert from a worker that predates segments
    assert where(legacy) == "fraud/f5"
    text = rendered(format_alert(alert(segment={"region": "eu"})))
    assert "fraud[region=eu]/f5" in text and "f5 of fraud[region=eu] drifted" in text
    assert "fraud/prediction v2" in rendered(format_alert(alert(feature=None, type="prediction_drift")))


def test_a_retraining_request_line_names_its_id_since_and_reason() -> None:
    request = {"request_id": "4086c60548a1" + "0" * 20, "model": "churn", "alert_ids": ["a", "b"],
               "since": {"event_time": "2026-12-03T02:04:55.632Z", "offsets": {}},
               "reason": "Retrain churn version 1: its inputs drifted [region=eu]"}  # fmt: skip
    text = rendered(format_request(request))
    assert "RETRAIN  request 4086c60548a1  since 2026-12-03T02:04:55.632Z (2 alerts)" in text
    assert "Retrain churn version 1: its inputs drifted [region=eu]" in text


def test_an_alert_line_names_every_detector_of_the_incident() -> None:
    text = rendered(format_alert(alert(detectors=["adwin", "ks", "psi"])))
    assert "psi (+adwin, ks)" in text  # the one that caused it, then the others
    assert " psi " in rendered(format_alert(alert(detectors=["psi"])))
    assert " psi " in rendered(format_alert(alert()))  # an alert from a worker that predates incidents


def test_the_demo_config_slices_fraud_by_a_key_its_traffic_sends(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "driftstream.toml"
    path.write_text(DEMO_CONFIG)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    config = Settings()
    assert config.segment_specs("fraud") == (("region",),)
    assert config.segment_specs("churn") == ()
    sent = {mix.key for mix in DEMO_TRAFFIC.segments}
    assert {key for spec in config.segment_specs("fraud") for key in spec} <= sent


def test_the_demo_drifts_f5_of_region_eu_only() -> None:
    plain = dataclasses.replace(DEMO_TRAFFIC, drifts=())
    drifted_events, plain_events = (
        model_events(DEMO_TRAFFIC, 0, clock=lambda: 0.0),
        model_events(plain, 0, clock=lambda: 0.0),
    )
    events = zip(drifted_events, plain_events, strict=True)
    eu_changed = 0
    for i, (drifted, base) in enumerate(itertools.islice(events, 20_000)):
        f5_moved = drifted["features"]["f5"] != base["features"]["f5"]
        assert f5_moved == (i >= 12_000 and drifted["segment"]["region"] == "eu")
        eu_changed += f5_moved
    assert eu_changed > 1500  # about half of the last 4000 events


def is_eu_f5(item: dict[str, Any]) -> bool:
    return item.get("status") == "firing" and item["feature"] == "f5" and item.get("segment") == {"region": "eu"}


@pytest.mark.integration
def test_the_demo_prints_a_segment_alert_a_concept_drift_alert_and_a_retraining_request(capsys) -> None:
    """The whole demo (its own broker, redis-server and worker) until the region=eu alert on f5 and
    churn's concept drift show.

    ``duration`` only bounds a broken run; the assertion is on what fired, not on when.
    """
    seen: list[dict[str, Any]] = []

    def both(item: dict[str, Any]) -> bool:
        seen.append(item)
        return all(any(map(wanted, seen)) for wanted in (is_eu_f5, is_churn_concept_drift, is_churn_request))

    shown = run_demo(duration=300, rate=4000, until=both)
    output = capsys.readouterr().out
    requests, shown = [i for i in shown if "request_id" in i], [i for i in shown if "request_id" not in i]
    assert any(is_eu_f5(item) for item in shown), output
    assert "fraud[region=eu]/f5" in output
    # The drift is eu's alone: no other region's slice of f5 fired.
    assert not [a for a in shown if a["feature"] == "f5" and a.get("segment") not in (None, {"region": "eu"})]
    assert any(is_churn_concept_drift(item) for item in shown), output
    assert "concept_drift" in output
    # Only churn's labels changed: fraud's quality is quiet.
    assert not [a for a in shown if a["model"] == "fraud" and a["type"] in ("concept_drift", "performance")]
    # Churn's critical concept drift (or its dataset drift, whichever came first) requested a retraining:
    # one, whatever follows within the cooldown, naming the alert that triggered it.
    (request,) = requests
    assert request["model"] == "churn" and request["alert_ids"][0] in {a["alert_id"] for a in shown}
    assert f"RETRAIN  request {request['request_id'][:12]}" in output


def is_churn_request(item: dict[str, Any]) -> bool:
    return item.get("model") == "churn" and "request_id" in item


def is_churn_concept_drift(item: dict[str, Any]) -> bool:
    return item.get("status") == "firing" and item["model"] == "churn" and item["type"] == "concept_drift"
