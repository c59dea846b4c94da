"""``driftstream status`` and ``driftstream report`` against a real broker, a real redis-server and a real
worker: the drifted feature shows as firing and the stable ones not; the report draws its plots in headless
Chromium; a closed port or an unknown model is one line and a non-zero exit."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.services import free_port
from streams.settings import Settings
from streams.simulate import Drift, Traffic, produce
from streams.status import read_state
from tests.integration.harness import WorkerProcess, isolated_settings, worker_env
from tests.streams.test_report import rendered_image_widths, row

pytestmark = pytest.mark.integration


def driftstream(settings: Settings, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streams", *args], env=worker_env(settings), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    return done, time.monotonic() - started


def firing_features(settings: Settings) -> set[str]:
    return {monitor.name for _, model in read_state(settings).monitors for monitor in model.whole.monitors()
            if monitor.policy.incidents}  # fmt: skip


def test_status_and_report_of_a_drifting_model(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    settings = isolated_settings(kafka_bootstrap, redis_url, "status", topic_partitions=2, reference_size=1000,
                                 window_size=500)  # fmt: skip
    traffic = Traffic(models=("fraud", "churn"), numeric=3, categorical=1, seed=5,
                      drifts=(Drift("f1", start=3000, kind="mean_shift", magnitude=2.0, model="fraud"),))  # fmt: skip
    worker = WorkerProcess(settings)
    try:
        assert produce(settings, traffic, count=6000, batch_size=200) == 12_000
        worker.wait_for(lambda: worker.metric("driftstream_events_consumed_total") == 12_000, 60, "12,000 events")
        deadline = time.monotonic() + 20  # the checkpoint that covers them: every second
        while "f1" not in firing_features(settings) and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        worker.stop()

    done, took = driftstream(settings, "status", "--width", "100")
    print(f"status in {took:.1f}s:\n{done.stdout}")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert re.search(r"fraud: 6,000 events, partition\(s\) \d, version\(s\) 1, \d alert\(s\) firing", text)
    assert re.search(r"churn: 6,000 events, .*nothing firing", text)
    fraud = text.split("fraud:")[1].split("churn:")[0]
    for detector in ("psi", "ks", "adwin"):
        assert row(fraud, "f1", detector)[-1] == "FIRING critical", detector
    for stable in ("f0", "f2", "c0", "prediction v1"):
        for detector in ("psi", "null_rate"):
            assert row(fraud, stable, detector)[-1] == "ok", (stable, detector)
    assert re.search(r"critical data_drift +fraud/f1 ", fraud.split("firing now")[1])

    done, took = driftstream(settings, "status", "churn", "--width", "100")
    assert done.returncode == 0 and "fraud" not in done.stdout and "churn: 6,000 events" in done.stdout

    page = tmp_path / "report.html"
    done, took = driftstream(settings, "report", "fraud", "--out", str(page))
    print(f"report in {took:.1f}s: {done.stdout.strip()}")
    assert done.returncode == 0, done.stderr
    done_all = done.stdout
    assert done.stdout.startswith(f"wrote {page}") and "reading " + settings.topic_metrics in done.stderr
    widths = rendered_image_widths(page)
    print(f"chromium drew {len(widths)} images, natural widths {widths}")
    assert len(widths) == 1 + 5 * 2 and all(width > 100 for width in widths)  # timeline; 4 features, prediction
    html = page.read_text()
    assert "<h3 id='f1'>f1 <span class=\"critical\">FIRING critical</span>" in html
    assert "<h3 id='f0'>f0 <span class=\"ok\">ok</span>" in html

    done, _ = driftstream(settings, "report", "fraud", "--out", str(tmp_path / "recent.html"), "--hours", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(": ", 1)[1] == done_all.split(": ", 1)[1]  # the same snapshots and alerts: all are recent
    assert "statistics and alerts of the last 1 hour(s)" in (tmp_path / "recent.html").read_text()

    done, took = driftstream(settings, "report", "nope", "--out", str(tmp_path / "nope.html"))
    print(f"unknown model: {took:.1f}s {done.stderr.strip()!r}")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "no state of model 'nope'" in done.stderr and "models there: churn, fraud" in done.stderr
    closed = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    done, took = driftstream(closed, "report", "fraud", "--out", str(tmp_path / "closed.html"))
    print(f"report, Kafka closed: {took:.1f}s {done.stderr.strip()!r}")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "cannot reach Kafka at 127.0.0.1:" in done.stderr and "DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS" in done.stderr
    assert took < 20


def test_a_bad_environment_is_one_line(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    settings = isolated_settings(kafka_bootstrap, redis_url, "status-bad", topic_partitions=1)
    done, took = driftstream(settings, "status")
    print(f"no state: {took:.1f}s {done.stderr.strip()!r}")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"no state for app id {settings.app_id!r}" in done.stderr

    closed = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    for args in (["status"], ["report", "fraud", "--out", str(tmp_path / "r.html")]):
        done, took = driftstream(closed, *args)
        print(f"{args[0]}, Redis closed: {took:.1f}s {done.stderr.strip()!r}")
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "cannot read the state at Redis redis://127.0.0.1:" in done.stderr
        assert "DRIFTSTREAM_REDIS_URL" in done.stderr
        assert took < 15
    assert not (tmp_path / "r.html").exists()
