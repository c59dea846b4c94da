"""``driftstream alerts`` against a real broker: filters, JSON for scripts, follow mode, and no group-join wait."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from streams.services import free_port
from streams.settings import Settings
from tests.integration.harness import isolated_settings, worker_env

pytestmark = pytest.mark.integration


def alert(i: int, model: str, kind: str = "data_drift", severity: str = "critical", status: str = "firing",
          feature: str | None = "f5") -> dict[str, Any]:  # fmt: skip
    return {"alert_id": f"{i:032x}", "type": kind, "status": status, "severity": severity, "model": model,
            "model_version": "1", "feature": feature, "segment": None, "detector": "psi", "detectors": ["psi"],
            "statistic": 0.41, "threshold": 0.25, "p_value": None,
            "window": {"count": 1000, "start": "2026-12-03T01:00:00.000Z", "end": "2026-12-03T01:01:00.000Z",
                       "event_index": 5000 + i},
            "reference": {}, "current": {}, "detected_at": f"2026-12-03T01:01:{i:02d}.000Z",
            "message": f"{model}: PSI of feature 'f5' is 0.410 over the last 1000 events (line 0.25, {severity})"}


def send(settings: Settings, alerts: list[dict[str, Any]]) -> None:
    producer = Producer(settings.confluent_config())
    for item in alerts:
        producer.produce(settings.topic_alerts, key=item["model"].encode(), value=orjson.dumps(item))
    assert producer.flush(10) == 0


def run(settings: Settings, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streams", "alerts", *args], env=worker_env(settings),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    return done, time.monotonic() - started


STREAM = [
    alert(1, "fraud"),
    alert(2, "fraud", severity="warning"),
    alert(3, "churn", "concept_drift", feature=None),
    alert(4, "fraud", status="resolved"),
    alert(5, "ads", "data_quality", severity="warning"),
]


def test_from_the_beginning_filtered_as_json_at_once(kafka_bootstrap: str, redis_url: str) -> None:
    settings = isolated_settings(kafka_bootstrap, redis_url, "alerts-cli", topic_partitions=1)
    send(settings, STREAM)
    done, took = run(settings, "--from-beginning", "--json", "--model", "fraud", "--severity", "critical",
                     "--count", "2")  # fmt: skip
    print(f"2 alerts of 5 read in {took:.2f}s (a subscribed consumer group first waits for its join)")
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(line) for line in done.stdout.splitlines()] == [STREAM[0], STREAM[3]]
    assert took < 15  # generous: the point is no 20 s group join (a typical run: about 1 s)
    done, _ = run(settings, "--from-beginning", "--json", "--type", "concept_drift", "--type", "data_quality",
                  "--count", "2")  # fmt: skip
    assert [orjson.loads(line)["alert_id"] for line in done.stdout.splitlines()] == [f"{3:032x}", f"{5:032x}"]
    done, _ = run(settings, "--from-beginning", "--firing", "--count", "3")
    text = done.stdout
    assert text.count("FIRING") == 3 and "RESOLVED" not in text
    assert "FIRING   critical data_drift       fraud/f5" in text and "churn/quality v1" in text
    assert "fraud: PSI of feature 'f5' is 0.410" in text


def test_it_follows_new_alerts_from_the_end(kafka_bootstrap: str, redis_url: str) -> None:
    settings = isolated_settings(kafka_bootstrap, redis_url, "alerts-follow", topic_partitions=2)
    send(settings, [alert(1, "old")])  # before it starts: not shown
    result: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: result.update(done=run(settings, "--json", "--count", "1")[0]))
    reader.start()
    i = 10
    while reader.is_alive() and i < 200:  # until it has read one: it starts at the end, whenever that is
        send(settings, [alert(i, "new")])
        i += 1
        reader.join(0.5)
    reader.join(30)
    done = result["done"]
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["model"] == "new"


def test_a_closed_port_or_a_missing_topic_is_one_line(kafka_bootstrap: str, redis_url: str) -> None:
    settings = isolated_settings(kafka_bootstrap, redis_url, "alerts-missing")
    closed = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    done, took = run(closed, "--count", "1")
    print(f"closed port: {took:.1f}s, {done.stderr.strip()!r}")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "cannot reach Kafka at 127.0.0.1:" in done.stderr and "DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS" in done.stderr
    assert took < 30
    missing = settings.model_copy(update={"topic_alerts": "no-such-alerts"})
    done, _ = run(missing, "--count", "1")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "'no-such-alerts' (DRIFTSTREAM_TOPIC_ALERTS) does not exist" in done.stderr


def test_the_readme_s_five_line_consumer_prints_alerts(kafka_bootstrap: str, redis_url: str) -> None:
    """The README's consumer, as written there (only its broker and topic pointed at the test's)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("A consumer of your own, five lines:\n\n```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) == 5
    settings = isolated_settings(kafka_bootstrap, redis_url, "alerts-readme", topic_partitions=1)
    send(settings, STREAM[:2])
    code = block.replace("localhost:9092", kafka_bootstrap).replace('"drift-alerts"', repr(settings.topic_alerts))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]  # after the group's join
    finally:
        process.kill()
        process.wait(10)
    assert [line.strip() for line in lines] == [STREAM[0]["message"], STREAM[1]["message"]]
