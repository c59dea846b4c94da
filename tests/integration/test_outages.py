"""Redis and the broker go away mid-stream; the worker waits, says so, and loses nothing."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from detectors.monitors import ModelMonitor
from streams.kafka import ensure_topics, log_holds
from streams.services import EmbeddedBroker
from streams.settings import Settings
from streams.simulate import Traffic, produce
from streams.state import decode
from tests.integration.harness import (
    WorkerProcess,
    caught_up,
    committed_offsets,
    isolated_settings,
    persistent_redis,
    stored_state,
    wait_until,
)  # fmt: skip

pytestmark = pytest.mark.integration

TRAFFIC = Traffic(models=("fraud", "churn", "credit", "ads"), numeric=4, categorical=1, seed=8)


def settings_for(bootstrap: str, redis_url: str, **overrides: Any) -> Settings:
    defaults: dict[str, Any] = dict(topic_partitions=4, reference_size=1000, broker_session_timeout=6.0,
                                    broker_rebalance_timeout=6.0)  # fmt: skip
    return isolated_settings(bootstrap, redis_url, "out", **(defaults | overrides))


def events_applied(config: Settings) -> int:
    """Events the stored snapshots have seen, over every model of every partition."""
    total = 0
    for fields in stored_state(config).values():
        for name, blob in fields.items():
            if name.startswith(b"model:"):
                total += ModelMonitor.restore(decode(blob), config.monitor_config(), {}).events_seen
    return total


def test_a_redis_outage_holds_offsets_back_and_the_worker_catches_up(kafka_bootstrap: str) -> None:
    redis = persistent_redis()
    redis.start()
    worker: WorkerProcess | None = None
    try:
        config = settings_for(kafka_bootstrap, redis.url)
        worker = WorkerProcess(config)
        per_model = 2500
        total = len(TRAFFIC.models) * per_model
        produce(config, TRAFFIC, count=per_model)
        wait_until(lambda: caught_up(config, total), 120, "the first part checkpointed", (worker,))
        saved = {p: int(fields[b"offset"]) for p, fields in stored_state(config).items()}
        redis.stop()
        outage = time.monotonic()
        produce(config, TRAFFIC, count=per_model)  # the second part arrives while Redis is down
        wait_until(lambda: worker.health() == 503 and worker.metric("driftstream_ready") == 0, 30,
                   "the worker to report not-ready", (worker,))  # fmt: skip
        wait_until(lambda: worker.metric("driftstream_unsaved_messages") >= total, 60,
                   "the second part to be read while Redis is down", (worker,))  # fmt: skip
        while time.monotonic() - outage < 20:
            # Kafka never learns of an offset Redis does not hold.
            assert all(offset <= saved[p] + 1 for p, offset in committed_offsets(config).items())
            time.sleep(1)
        assert worker.alive() and worker.health() == 503
        redis.start()
        catch_up = wait_until(lambda: caught_up(config, 2 * total), 60, "the catch-up after Redis returns",
                              (worker,))  # fmt: skip
        wait_until(lambda: worker.health() == 200, 10, "the worker to report ready again", (worker,))
        assert events_applied(config) == 2 * total  # nothing lost, nothing counted twice
        assert worker.metric("driftstream_checkpoint_failures_total") >= 1
        assert worker.metric("driftstream_unsaved_messages") == 0
        print(f"Redis down {time.monotonic() - outage - catch_up:.1f}s; caught up {catch_up:.2f}s after it returned")
        assert worker.stop() == 0
    finally:
        if worker is not None:
            worker.stop()
        redis.stop()


def deployment_probes() -> dict[str, str]:
    """The path of each HTTP probe of the worker container in k8s/deployment.yaml."""
    deployment = yaml.safe_load((Path(__file__).resolve().parents[2] / "k8s" / "deployment.yaml").read_text())
    (container,) = (c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "worker")
    return {probe: container[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}


def status(worker: WorkerProcess, path: str) -> int:
    """The HTTP status of one of the worker's pages (-1 when nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.web_port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return -1


def test_without_redis_the_worker_is_alive_but_not_ready(kafka_bootstrap: str) -> None:
    """The deployment's probes during a Redis outage: liveness (and startup) answer 200, so
    Kubernetes restarts no worker, readiness 503; ready again once Redis is back."""
    probes = deployment_probes()
    assert probes == {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/healthz"}
    alive, ready = probes["livenessProbe"], probes["readinessProbe"]
    redis = persistent_redis()
    redis.start()
    worker: WorkerProcess | None = None
    try:
        config = settings_for(kafka_bootstrap, redis.url, topic_partitions=2)
        worker = WorkerProcess(config)
        produce(config, TRAFFIC, count=250)
        wait_until(lambda: caught_up(config, 1000), 120, "the first events checkpointed", (worker,))
        assert (status(worker, alive), status(worker, ready)) == (200, 200)
        redis.stop()
        outage = time.monotonic()
        noticed = wait_until(lambda: status(worker, ready) == 503, 30, "readiness to fail", (worker,))
        produce(config, TRAFFIC, count=250)  # the worker keeps consuming into memory meanwhile
        answers: list[tuple[int, int]] = []
        while time.monotonic() - outage < 20:
            answers.append((status(worker, alive), status(worker, ready)))
            time.sleep(0.5)
        assert set(answers) == {(200, 503)}, answers
        assert worker.metric("driftstream_ready") == 0 and worker.metric("driftstream_unsaved_messages") > 0
        down = time.monotonic() - outage
        redis.start()
        back = wait_until(lambda: status(worker, ready) == 200, 60, "readiness after Redis returned", (worker,))
        wait_until(lambda: caught_up(config, 2000), 60, "the events of the outage checkpointed", (worker,))
        assert status(worker, alive) == 200 and worker.alive()
        print(f"Redis down {down:.1f}s: {alive} answered 200 and {ready} 503 {len(answers)} times (503 "
              f"{noticed:.1f}s after Redis stopped); {ready} 200 {back:.1f}s after it returned")  # fmt: skip
        assert worker.stop() == 0
    finally:
        if worker is not None:
            worker.stop()
        redis.stop()


def test_a_broker_restart_is_survived(redis_url: str) -> None:
    """The test broker keeps its log in memory, so a restart brings back an empty broker:
    no topics, no group offsets, offsets from 0 again. The worker must reconnect, notice
    that the log restarted (its checkpoint covers offsets the new log does not have) and
    apply the new events instead of skipping them as already seen."""
    broker = EmbeddedBroker()
    broker.start()
    worker: WorkerProcess | None = None
    try:
        config = settings_for(broker.bootstrap, redis_url, topic_partitions=2)
        worker = WorkerProcess(config)
        produce(config, TRAFFIC, count=1500)
        wait_until(lambda: caught_up(config, 6000), 120, "the first part checkpointed", (worker,))
        broker.stop()
        time.sleep(5)
        assert worker.alive()
        broker.start()
        ensure_topics(config)
        wait_until(lambda: worker.metric("driftstream_offset_resets_total") >= 1, 60,
                   "the worker to notice the restarted log", (worker,))  # fmt: skip
        produce(config, TRAFFIC, count=500)
        wait_until(lambda: caught_up(config, 2000), 120, "the new log checkpointed", (worker,))
        assert events_applied(config) == 6000 + 2000
        assert worker.stop() == 0
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def test_healthz_names_the_broker_while_it_is_down(redis_url: str) -> None:
    broker = EmbeddedBroker()
    broker.start()
    worker: WorkerProcess | None = None
    try:
        config = settings_for(broker.bootstrap, redis_url, topic_partitions=2)
        worker = WorkerProcess(config)
        wait_until(lambda: worker.health() == 200, 60, "the worker to be ready", (worker,))
        status, body = worker.healthz()
        assert (status, body["broker"], body["store"], body["blocked_partitions"]) == (200, True, True, [])
        broker.stop()
        noticed = wait_until(lambda: worker.healthz()[1].get("broker") is False, 30, "/healthz to name the broker",
                             (worker,))  # fmt: skip
        status, body = worker.healthz()
        assert status == 503 and not body["ready"] and body["store"] is True, body
        assert worker.metric("driftstream_ready") == 0
        broker.start()  # in memory: an empty broker again, so the topics are made again
        ensure_topics(config)
        back = wait_until(lambda: worker.health() == 200, 60, "the worker to be ready again", (worker,))
        assert worker.healthz()[1]["broker"] is True
        print(f"/healthz named the broker {noticed:.1f}s after it stopped; ready {back:.1f}s after it returned")
        assert worker.metric("driftstream_ready") == 1
        assert worker.stop() == 0
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def test_the_log_probe_tells_the_same_log_from_a_restarted_one(kafka_bootstrap: str, redis_url: str) -> None:
    config = settings_for(kafka_bootstrap, redis_url, topic_partitions=1)
    producer = Producer(config.confluent_config())
    for i in range(10):
        producer.produce(config.topic_events, value=b"{}", timestamp=1_800_000_000_000 + i)
    producer.flush(10)
    holds = log_holds(config, config.topic_events, {0: (5, 1_800_000_000_005)})
    assert holds == {0: True}
    assert log_holds(config, config.topic_events, {0: (5, 1_700_000_000_000)}) == {0: False}  # another record
    assert log_holds(config, config.topic_events, {0: (50, 1_800_000_000_050)}) == {0: False}  # log too short


def test_the_log_probe_reads_past_a_short_high_watermark(kafka_bootstrap: str, redis_url: str) -> None:
    """Between a partition's first checkpoint and its first commit, the checkpoint ends on the last
    record read, usually in the log's last batch, which the Tansu broker leaves out of its high
    watermark. The probe reads what is there instead, and never calls a log it could not read restarted."""
    config = settings_for(kafka_bootstrap, redis_url, topic_partitions=1)
    producer = Producer({**config.confluent_config(), "linger.ms": 200})  # the 20 records in one batch
    for i in range(20):
        producer.produce(config.topic_events, value=b"{}", timestamp=1_800_000_000_000 + i)
    assert producer.flush(10) == 0
    consumer = Consumer({**config.confluent_config(), "group.id": "watermarks"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(config.topic_events, 0), timeout=10)
    finally:
        consumer.close()
    print(f"20 records (offsets 0-19) in one batch; the broker reports watermarks {low}, {high}")
    last = (19, 1_800_000_000_019)
    assert log_holds(config, config.topic_events, {0: last}) == {0: True}
    assert log_holds(config, config.topic_events, {0: (19, 1_700_000_000_000)}) == {0: False}  # another record
    assert log_holds(config, config.topic_events, {0: (50, 1_800_000_000_050)}) == {0: False}  # the log ends before
    # No time to read (a busy broker): cannot tell. A short high watermark alone is no proof
    # of a restarted log, which would have the worker apply all of it a second time.
    assert log_holds(config, config.topic_events, {0: last}, timeout=0) == {0: None}
    empty = settings_for(kafka_bootstrap, redis_url, topic_partitions=1)
    assert log_holds(empty, empty.topic_events, {0: last}) == {0: False}  # a log that holds nothing


def test_a_checkpoint_without_a_commit_is_not_taken_for_a_restarted_log(kafka_bootstrap: str, redis_url: str) -> None:
    """A worker that checkpointed and died before its commit: the next one finds state but no
    committed offset, checks the log, and applies nothing twice."""
    first = settings_for(kafka_bootstrap, redis_url, topic_partitions=1)
    producer = Producer({**first.confluent_config(), "linger.ms": 200})  # the checkpoint ends in a big last batch
    per_model = 500
    total = len(TRAFFIC.models) * per_model
    produce(first, TRAFFIC, count=per_model, producer=producer)
    assert producer.flush(10) == 0
    worker = WorkerProcess(first)
    try:
        wait_until(lambda: caught_up(first, total), 60, "the log checkpointed", (worker,))
    finally:
        assert worker.stop() == 0, worker.tail()
    # The same checkpoint for a group that never committed: the state a crash between the
    # checkpoint and the commit leaves.
    second = first.model_copy(update={"app_id": f"{first.app_id}-next"})
    client = redis.Redis.from_url(redis_url)
    try:
        key = f"{first.state_prefix}:{{}}:state:{first.topic_events}:0"
        client.hset(key.format(second.app_id), mapping=client.hgetall(key.format(first.app_id)))
    finally:
        client.close()
    assert committed_offsets(second) == {}
    worker = WorkerProcess(second)
    try:
        # Faust reads the log from its start (no committed offset); the engine skips what the
        # checkpoint covers, once the probe has said whether it is the same log.
        wait_until(lambda: worker.metric("driftstream_messages_consumed_total") >= total, 60,
                   "the worker to read the log once", (worker,))  # fmt: skip
        produce(second, TRAFFIC, count=100)
        wait_until(lambda: caught_up(second, total + 400), 60, "the new events checkpointed", (worker,))
        assert worker.metric("driftstream_offset_resets_total") == 0
        assert events_applied(second) == total + 400  # nothing applied twice
        assert worker.stop() == 0
    finally:
        worker.stop()
