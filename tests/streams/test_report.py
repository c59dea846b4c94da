"""``driftstream status`` and ``driftstream report`` from real monitor state: the table names what fires,
and the report's one HTML file draws every plot in headless Chromium without fetching anything."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.columns import Column
from detectors.inspection import CategoricalShares, NumericShares, columns_of, read_models, shares
from detectors.monitors import ModelBatch, ModelMonitor
from streams.report import alert_spans, render_report, statistic_series
from streams.settings import Settings
from streams.state import Checkpoint, encode
from streams.status import LiveState, print_status, restore_state

SETTINGS = Settings(reference_size=2000, window_size=500)
START = 1.8e9


def drifted_monitor(model: str = "fraud", n: int = 8000, seed: int = 0) -> tuple[ModelMonitor, list[dict[str, Any]]]:
    """A model whose f1 shifts by 1.5 sigma and c0's mix changes from event 5000, f0 and f2 stable; with the
    drift-metrics snapshots a worker would have published along the way."""
    monitor = ModelMonitor(model, SETTINGS.monitor_config())
    rng = np.random.default_rng(seed)
    data = {f"f{i}": rng.standard_normal(n) for i in range(3)}
    data["f1"][5000:] += 1.5
    colour = rng.choice(["red", "green", "blue"], n, p=[0.6, 0.3, 0.1])
    colour[5000:] = rng.choice(["red", "green", "blue"], max(n - 5000, 0), p=[0.2, 0.3, 0.5])
    snapshots = []
    for start in range(0, n, 250):
        features = {name: Column.from_values(values[start : start + 250].tolist()) for name, values in data.items()}
        features["c0"] = Column.from_values(colour[start : start + 250].tolist())
        observation = monitor.observe(ModelBatch(features, np.arange(start, start + 250, dtype=float) + START))
        if observation.statistics:
            snapshots.append({"model": model, "at": START + start, "statistics": [
                {"version": v, "segment": s or None, "feature": f, "detector": d, "value": value,
                 "line": observation.lines.get((v, s, f, d))}
                for (v, s, f, d), value in observation.statistics.items()]})  # fmt: skip
    return monitor, snapshots


def state_of(*monitors: tuple[int, ModelMonitor]) -> LiveState:
    """The monitors as a worker checkpoints them (msgpack), read back as status reads Redis."""
    checkpoints = [Checkpoint("inference-events", partition, 100, {m.model: encode(m.snapshot())})
                   for partition, m in monitors]  # fmt: skip
    return restore_state(SETTINGS, checkpoints)


def status_text(state: LiveState) -> str:
    out = io.StringIO()
    print_status(read_models(state.monitors), out, width=120)
    return out.getvalue()


def row(text: str, feature: str, detector: str) -> list[str]:
    """The cells of one detector's table row (the feature is named on its first detector's row only)."""
    current = None
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) < 5:
            continue
        current = cells[0] or current
        if current == feature and cells[1] == detector:
            return cells
    raise AssertionError(f"no row of {feature}/{detector}")


def test_status_names_the_drifted_features_as_firing_and_the_stable_ones_not() -> None:
    monitor, _ = drifted_monitor()
    text = status_text(state_of((0, monitor)))
    print(text)
    # f1, c0, and the whole model's own: dataset drift (two inputs critical) and pca_reconstruction
    assert "fraud: 8,000 events, partition(s) 0" in text and "4 alert(s) firing" in text
    for detector in ("psi", "ks", "adwin"):
        assert row(text, "f1", detector)[-1] == "FIRING critical"
    for feature in ("f0", "f2"):
        for detector in ("psi", "ks", "null_rate", "adwin", "page_hinkley"):
            assert row(text, feature, detector)[-1] == "ok", (feature, detector)
    psi = row(text, "f1", "psi")
    assert float(psi[2]) > float(psi[3]) == 0.25  # the statistic beyond its (critical) line
    firing = text.split("firing now", 1)[1]
    assert re.search(r"critical data_drift +fraud/f1 +adwin, ks, page_hinkley, psi", firing)
    assert "fraud/c0" in firing and "fraud/f0" not in firing and "fraud/f2" not in firing
    assert re.search(r"critical data_drift +fraud/inputs +dataset\n", firing)
    assert re.search(r"critical data_drift +fraud/inputs +pca_reconstruction\n", firing)


def test_status_merges_a_model_s_partitions_and_says_what_it_could_not_read() -> None:
    first, _ = drifted_monitor(seed=1)
    second, _ = drifted_monitor(seed=2, n=3000)  # judging since its 2000th event, nothing drifted yet
    state = restore_state(SETTINGS, [
        Checkpoint("inference-events", 0, 9, {"fraud": encode(first.snapshot())}),
        Checkpoint("inference-events", 3, 9, {"fraud": encode(second.snapshot()), "broken": b"\x93\x01\x02\x03"}),
        Checkpoint("inference-events", 5, 9, {}, version=99),
    ])  # fmt: skip
    text = status_text(state)
    assert "fraud: 11,000 events, partition(s) 0, 3" in text and "partition" in text.splitlines()[2]
    assert state.problems == [
        "inference-events[3]: model 'broken' not readable (model snapshot version None is not one of 2, 3)",
        "inference-events[5]: layout 99 is newer than this release reads (upgrade driftstream)",
    ]


def test_a_column_still_collecting_its_reference_says_so() -> None:
    monitor, _ = drifted_monitor(n=1000)
    text = status_text(state_of((0, monitor)))
    assert "collecting its reference: 1000/2000 values" in text and "nothing firing" in text


def test_shares_compare_the_reference_with_the_window() -> None:
    monitor, _ = drifted_monitor()
    columns = columns_of([monitor])
    f1 = shares(columns[("f1", None)])
    assert isinstance(f1, NumericShares) and f1.current_count == 500 and f1.reference_count == 2000
    assert abs(f1.reference.sum() - 1) < 1e-9 and abs(f1.current.sum() - 1) < 1e-9
    assert f1.current_mean is not None and f1.current_mean - f1.reference_mean > 1.2  # the 1.5 sigma shift
    c0 = shares(columns[("c0", None)])
    assert isinstance(c0, CategoricalShares) and c0.categories[:3] == ["red", "green", "blue"]
    assert c0.reference[0] > 0.55 and c0.current[2] > 0.4  # blue went from 10% to 50%


def test_alert_spans_run_from_firing_to_resolved_and_stay_open_while_firing() -> None:
    def alert(at: int, status: str, severity: str, feature: str = "f1") -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(START + at))
        return {"type": "data_drift", "status": status, "severity": severity, "feature": feature, "segment": None,
                "detected_at": stamp}  # fmt: skip

    alerts = [alert(10, "firing", "warning"), alert(20, "firing", "critical"), alert(50, "resolved", "critical"),
              alert(60, "firing", "warning", "f2")]  # fmt: skip
    spans = alert_spans(alerts, now=START + 100)
    assert [(s.row, s.start - START, s.end - START, s.severity, s.open) for s in spans] == [
        ("f1", 10, 20, "warning", False),
        ("f1", 20, 50, "critical", False),
        ("f2", 60, 100, "warning", True),
    ]


def test_statistic_series_keep_one_scope_in_time_order() -> None:
    _, snapshots = drifted_monitor()
    series = statistic_series(reversed(snapshots))
    psi = series[("f1", None, "psi")]
    assert len(psi) == 12 and [p[0] for p in psi] == sorted(p[0] for p in psi)  # (8000 - 2000) / 500 windows
    assert psi[-1][1] > psi[-1][2] and psi[0][1] < psi[0][2]  # over its line at the end, under it at the start
    assert statistic_series(snapshots, scope="region=eu") == {}


# -- rendered in a real browser ------------------------------------------------------------

_CHECK = """<script>window.addEventListener('load', () => {
  const found = [...document.images].map(image => image.naturalWidth);
  const pre = document.createElement('pre'); pre.id = 'driftstream-check';
  pre.textContent = JSON.stringify(found); document.body.appendChild(pre);
});</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: run `bash tests/system-packages.sh` (make test does), which installs "
                    "Debian's chromium package")  # fmt: skip
    return found


def chromium_flags(profile: str) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]  # fmt: skip


def rendered_image_widths(page: Path) -> list[int]:
    """Every <img>'s natural width once headless Chromium has loaded ``page`` (0: it did not draw)."""
    html = page.read_text()
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", html), "the report must fetch nothing"
    with tempfile.TemporaryDirectory() as profile:
        probe = Path(profile) / "probe.html"
        probe.write_text(html.replace("</body>", _CHECK + "</body>"))
        done = subprocess.run([chromium(), *chromium_flags(profile), "--dump-dom", probe.as_uri()],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    found = re.search(r'<pre id="driftstream-check">(.*?)</pre>', done.stdout)
    assert found, f"chromium did not run the page's check: {done.stderr[-2000:]}"
    return list(json.loads(found.group(1)))


def test_the_report_draws_every_plot_in_headless_chromium(tmp_path: Path) -> None:
    monitor, snapshots = drifted_monitor()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(START + 6000))
    alerts = [{"model": "fraud", "type": "data_drift", "status": "firing", "severity": "critical", "feature": "f1",
               "segment": None, "detector": "psi", "detectors": ["ks", "psi"], "detected_at": stamp,
               "message": "fraud: PSI of feature 'f1' is 1.9 over the last 500 events (line 0.25)"}]  # fmt: skip
    page = tmp_path / "report.html"
    page.write_text(render_report("fraud", state_of((0, monitor)), snapshots, alerts, now=START + 8000))
    widths = rendered_image_widths(page)
    print(f"{len(widths)} images, natural widths {widths}")
    assert len(widths) == 1 + 4 * 2  # the timeline; per feature its distribution and its statistics
    assert all(width > 100 for width in widths)
    text = page.read_text()
    assert "<h3 id='f1'>f1 <span class=\"critical\">FIRING critical</span>" in text
    assert "<h3 id='f0'>f0 <span class=\"ok\">ok</span>" in text


def test_status_lists_what_the_quality_monitors_of_the_labels_partitions_fire() -> None:
    """Performance and concept drift live in the labels partitions' checkpoints: status reads them too."""
    from detectors.monitors.quality import LabeledRows, QualityMonitor

    monitor, _ = drifted_monitor()
    quality = QualityMonitor("fraud", SETTINGS.monitor_config())
    n = 25_000
    errors = np.random.default_rng(3).random(n) < np.where(np.arange(n) < 20_000, 0.1, 0.3)
    for start in range(0, n, 5000):
        part = slice(start, start + 5000)
        labels = np.ones(n, dtype=int)[part]
        predictions = np.where(errors[part], 0, 1)
        times = np.arange(start, min(start + 5000, n), dtype=float) + START
        quality.observe(LabeledRows(versions=["1"] * len(labels), segments=[None] * len(labels),
                                    predictions=predictions.tolist(), probabilities=[None] * len(labels),
                                    labels=labels.tolist(), event_times=times, label_times=times + 60))  # fmt: skip
    checkpoints = [Checkpoint("inference-events", 0, 100, {"fraud": encode(monitor.snapshot())}),
                   Checkpoint("inference-labels", 0, 50, {"fraud": encode({"quality": quality.snapshot()})})]
    state = restore_state(SETTINGS, checkpoints)
    assert state.partitions == [0]  # the labels partition is no events partition
    out = io.StringIO()
    print_status(read_models(state.monitors), out, width=140, quality=state.quality)
    text = out.getvalue()
    assert re.search(r"critical\s+performance\s+fraud/quality v1\s+accuracy_test", text), text
    assert re.search(r"concept_drift\s+fraud/quality v1\s+ddm", text), text


def test_status_shows_a_broken_constraint_of_the_config_file() -> None:
    settings = Settings(reference_size=2000, window_size=500,
                        models={"fraud": {"constraints": {"amount": {"min": 0}}}})  # fmt: skip
    monitor = ModelMonitor("fraud", settings.monitor_config("fraud"), constraints=settings.constraints("fraud"))
    rng = np.random.default_rng(2)
    for start in range(0, 3000, 500):
        amounts = rng.exponential(10.0, 500)
        if start >= 2000:
            amounts[::4] *= -1  # a quarter of the amounts negative
        monitor.observe(ModelBatch({"amount": Column.from_values(amounts.tolist())},
                                   np.arange(start, start + 500, dtype=float) + START))  # fmt: skip
    assert ("amount", "data_quality", "critical", ("constraint",)) in monitor.model_firing()
    checkpoint = Checkpoint("inference-events", 0, 9, {"fraud": encode(monitor.snapshot())})
    out = io.StringIO()
    print_status(read_models(restore_state(settings, [checkpoint]).monitors), out, width=120)
    assert re.search(r"critical data_quality +fraud/amount +constraint\n", out.getvalue()), out.getvalue()
