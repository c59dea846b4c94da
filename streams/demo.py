"""``driftstream demo``: broker, Redis, a worker and drifting traffic on one machine."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.console import Console

from streams.console import format_alert, format_request
from streams.kafka import ensure_topics
from streams.services import EmbeddedBroker, EmbeddedRedis, free_port, stop_process_group, wait_for_port
from streams.settings import Settings
from streams.simulate import ConceptDrift, Drift, LabelDelay, LabelPlan, SegmentMix, Traffic, produce

console = Console(highlight=False)

DEMO_TRAFFIC = Traffic(
    models=("fraud", "churn"),
    numeric=6,
    categorical=2,
    seed=42,
    drifts=(
        Drift("f2", start=8000, kind="mean_shift", magnitude=1.0, model="churn"),
        Drift("c0", start=11000, kind="category_mix", model="churn"),
        Drift("f4", start=14000, kind="null_rate", magnitude=0.3, model="churn"),
        # One region only: the fraud model's region=eu slice shows it at full strength, the whole
        # model diluted by the other regions' traffic. Each region builds its reference from its
        # own first 5000 events (eu: by the model's event 10,000), so the drift comes after it.
        Drift("f5", start=12000, kind="mean_shift", magnitude=1.0, model="fraud", segment={"region": "eu"}),
    ),
    segments=(SegmentMix("region", ("eu", "us", "apac"), (0.5, 0.3, 0.2)),),
)
# Every event's true label comes later (5 s on average); from churn's event 9000 its labels follow
# another truth while its inputs stay the same: a concept drift only the labels show.
DEMO_LABELS = LabelPlan(delay=LabelDelay("exp", 5.0), concept_drifts=(ConceptDrift(9000, model="churn"),))
DEMO_LABEL_BATCH = 50
# The worker's config: the fraud model is monitored per region as well as as a whole.
SLICED_KEYS = {"fraud": ("region",)}
DEMO_CONFIG = "".join(f"[models.{model}]\nsegments = {orjson.dumps(list(keys)).decode()}\n"
                      for model, keys in SLICED_KEYS.items())  # fmt: skip


@contextmanager
def _worker(env: dict[str, str], log_path: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        stop_process_group(process, 15)


def describe_drift(drift: Drift) -> str:
    """``churn/f2 mean +1 sd from event 8000``: what the demo does, read from its traffic."""
    model = drift.model or DEMO_TRAFFIC.models[0]
    place = f"{model}/{drift.feature}"
    if drift.segment:
        place += " in " + ", ".join(f"{key}={value}" for key, value in drift.segment.items()) + " only"
    what = {"mean_shift": f"mean {drift.magnitude:+g} sd", "null_rate": f"{drift.magnitude:.0%} missing",
            "category_mix": "category mix", "variance": f"sd x{drift.magnitude:g}"}[drift.kind]  # fmt: skip
    return f"{place} {what} from its event {drift.start}"


def describe_concept_drift(drift: ConceptDrift) -> str:
    """``churn labels follow another truth from its event 9000``."""
    return f"{drift.model or DEMO_TRAFFIC.models[0]} labels follow another truth from its event {drift.start}"


def run_demo(
    duration: float = 0.0,
    rate: float = 2000.0,
    until: Callable[[dict[str, Any]], bool] | None = None,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """Run until Ctrl-C, ``duration`` seconds, or the first item ``until`` accepts; the alerts and
    retraining requests printed (a request is the one with a ``request_id``).

    ``seed`` replaces the traffic's (42): other values, the same drifts.
    """
    traffic = DEMO_TRAFFIC if seed is None else dataclasses.replace(DEMO_TRAFFIC, seed=seed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    shown: list[dict[str, Any]] = []
    with ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        console.print(f"[bold]broker[/]   Kafka-compatible (Tansu, in memory) on {broker.bootstrap}")
        env = dict(os.environ)
        if EmbeddedRedis.available():
            redis = stack.enter_context(EmbeddedRedis())
            env["DRIFTSTREAM_REDIS_URL"] = redis.url
            console.print(f"[bold]redis[/]    redis-server on {redis.url}")
        else:
            env["DRIFTSTREAM_STATE_BACKEND"] = "memory"
            console.print("[bold yellow]warning[/]  redis-server not found: detector state is kept "
                          "in memory and will NOT survive a restart")  # fmt: skip
        web_port = free_port()
        # Kept after the demo (like the worker's log in it) so both can be read afterwards.
        demo_dir = Path(tempfile.mkdtemp(prefix="driftstream-demo-"))
        config_path = demo_dir / "driftstream.toml"
        config_path.write_text(DEMO_CONFIG)
        env.update(
            DRIFTSTREAM_CONFIG=str(config_path),
            DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
            DRIFTSTREAM_WEB_PORT=str(web_port),
            DRIFTSTREAM_WEB_HOST="127.0.0.1",
            DRIFTSTREAM_APP_ID="driftstream-demo",
            DRIFTSTREAM_WINDOW_SIZE="1000",
            DRIFTSTREAM_LOG_LEVEL="WARNING",
        )
        settings = Settings(kafka_bootstrap_servers=broker.bootstrap)
        ensure_topics(settings)
        log_path = str(demo_dir / "worker.log")
        worker = stack.enter_context(_worker(env, log_path))
        wait_for_port(web_port, 60, worker)
        console.print(f"[bold]worker[/]   metrics on http://127.0.0.1:{web_port}/metrics, "
                      f"health on /healthz, log in {log_path}")  # fmt: skip
        console.print(f"[bold]config[/]   {config_path}: the fraud model is also monitored per region")
        console.print(f"[bold]traffic[/]  models {' and '.join(traffic.models)} at {rate:g} events/s in envelopes "
                      f"of 50 (seed {traffic.seed}), regions eu 50%, us 30%, apac 20%; drift: "
                      + "; ".join(describe_drift(drift) for drift in traffic.drifts))  # fmt: skip
        console.print(f"[bold]labels[/]   every event's label about {DEMO_LABELS.delay.mean:g} s later, in envelopes "
                      f"of {DEMO_LABEL_BATCH}; concept drift: "
                      + "; ".join(describe_concept_drift(drift) for drift in DEMO_LABELS.concept_drifts))  # fmt: skip
        producer = threading.Thread(
            target=produce,
            kwargs=dict(settings=settings, traffic=traffic, count=0, rate=rate, batch_size=50,
                        should_stop=stop.is_set, labels=DEMO_LABELS, label_batch=DEMO_LABEL_BATCH),
            daemon=True,
        )  # fmt: skip
        producer.start()
        consumer = Consumer({**settings.confluent_config(), "group.id": "driftstream-demo-console"})
        stack.callback(consumer.close)
        # Assigned, not subscribed: reading from the start needs no group rebalance.
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for topic in (settings.topic_alerts,
                                                                                 settings.topic_retrain)
                         for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions])  # fmt: skip
        console.print("[bold]alerts[/]   as they fire, and the retraining requests they lead to (Ctrl-C stops "
                      "everything):")  # fmt: skip
        started = time.monotonic()
        try:
            while not stop.is_set() and (duration <= 0 or time.monotonic() - started < duration):
                if worker.poll() is not None:
                    console.print(f"[bold red]worker exited with code {worker.returncode}; see {log_path}")
                    break
                message = consumer.poll(0.5)
                value = None if message is None or message.error() else message.value()
                if message is None or value is None:
                    continue
                item = orjson.loads(value)
                text = format_request(item) if message.topic() == settings.topic_retrain else format_alert(item)
                console.print(f"{time.monotonic() - started:6.1f}s " + text)
                shown.append(item)
                if until is not None and until(item):
                    break
        except KeyboardInterrupt:
            pass
        stop.set()
        producer.join(5)
        console.print("stopping worker, redis and broker ...")
    requests = sum(1 for item in shown if "request_id" in item)
    console.print(f"stopped; {len(shown) - requests} alert(s) and {requests} retraining request(s) shown")
    return shown
