"""Run real worker processes and read real topics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streams.kafka import ensure_topics
from streams.services import EmbeddedRedis, free_port, stop_process_group
from streams.settings import Settings


def isolated_settings(bootstrap: str, redis_url: str, name: str, **overrides: Any) -> Settings:
    """Settings of a worker group of its own (app id, Redis keys and topics, which it creates)."""
    unique = uuid.uuid4().hex[:10]
    values: dict[str, Any] = dict(
        kafka_bootstrap_servers=bootstrap, redis_url=redis_url, app_id=f"{name}-{unique}",
        state_prefix=f"{name}-{unique}", topic_events=f"events-{unique}", topic_labels=f"labels-{unique}",
        topic_alerts=f"alerts-{unique}", topic_metrics=f"metrics-{unique}", topic_dlq=f"dlq-{unique}",
        topic_retrain=f"retrain-{unique}", log_level="WARNING",
    )  # fmt: skip
    config = Settings(**(values | overrides))
    ensure_topics(config)
    return config


def alerts_of(settings: Settings) -> list[dict[str, Any]]:
    """Every alert on the group's alert topic, decoded."""
    return [orjson.loads(m.value()) for m in read_topic(settings, settings.topic_alerts)]


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM_")}
    for name, value in settings.model_dump(mode="json", exclude={"models"}).items():
        if value is not None:
            env[f"DRIFTSTREAM_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return env


class WorkerProcess:
    """``driftstream worker`` as a child process, with its /metrics at hand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.model_copy(update={"web_port": free_port(), "web_host": "127.0.0.1"})
        self.log = tempfile.NamedTemporaryFile(prefix="driftstream-test-worker-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env=worker_env(self.settings), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def samples(self) -> list[Sample] | None:
        """Every sample of its /metrics page (None when nothing answers).

        prometheus_client's own parser reads the page: label values are any text a
        producer sent (a model name may hold ``}``, quotes or newlines, escaped there).
        """
        url = f"http://127.0.0.1:{self.settings.web_port}/metrics"
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            return None
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Sum of the samples of ``name`` that carry every one of ``labels`` (-1 when nothing answers)."""
        samples = self.samples()
        if samples is None:
            return -1.0
        wanted = (labels or {}).items()
        return sum(sample.value for sample in samples if sample.name == name and wanted <= sample.labels.items())

    def label_values(self, label: str) -> set[str] | None:
        """The values of ``label`` over every series it exports (None when nothing answers)."""
        samples = self.samples()
        return None if samples is None else {s.labels[label] for s in samples if label in s.labels}

    def healthz(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body of /healthz ((-1, {}) when nothing answers)."""
        url = f"http://127.0.0.1:{self.settings.web_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return -1, {}

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}); log:\n{self.tail()}")
            if condition():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; worker log:\n{self.tail()}")

    def wait_consumed(self, messages: int, timeout: float = 120) -> None:
        self.wait_for(lambda: self.metric("driftstream_messages_consumed_total") >= messages, timeout,
                      f"{messages} messages consumed")  # fmt: skip

    def health(self) -> int:
        """The HTTP status of /healthz (-1 when nothing answers)."""
        try:
            return int(urllib.request.urlopen(f"http://127.0.0.1:{self.settings.web_port}/healthz", timeout=2).status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return -1

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            kb = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
        return int(kb) * 1024

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        with open(self.log.name, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        return stop_process_group(self.process, timeout, sig)


def read_topic(settings: Settings, topic: str, timeout: float = 5.0) -> list[Message]:
    """Every message of a topic, from the beginning, until it stays quiet for a while."""
    consumer = Consumer({**settings.confluent_config(), "group.id": f"reader-{topic}",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Message] = []
        quiet_until = time.monotonic() + timeout
        while time.monotonic() < quiet_until:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                messages.append(message)
                quiet_until = time.monotonic() + 1.0
        return messages
    finally:
        consumer.close()


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, workers: tuple[WorkerProcess, ...] = ()
) -> float:
    """Poll ``condition``; the seconds it took. Fails with the workers' logs on timeout or exit."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for worker in workers:
            if not worker.alive():
                raise AssertionError(f"worker exited ({worker.process.returncode}); log:\n{worker.tail()}")
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    logs = "\n".join(worker.tail() for worker in workers)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; logs:\n{logs}")


def committed_offsets(settings: Settings) -> dict[int, int]:
    """Offsets the worker group committed on the events topic (partitions without one left out)."""
    consumer = Consumer({**settings.confluent_config(), "group.id": settings.app_id, "enable.auto.commit": False})
    try:
        topic = settings.topic_events
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    finally:
        consumer.close()


def worker_group(base: Settings, name: str) -> Settings:
    """A worker group of its own over the shared input: own consumer group, Redis keys, outputs."""
    config = base.model_copy(update={
        "app_id": f"{base.app_id}-{name}", "topic_alerts": f"{base.topic_alerts}-{name}",
        "topic_metrics": f"{base.topic_metrics}-{name}", "topic_dlq": f"{base.topic_dlq}-{name}",
        "topic_retrain": f"{base.topic_retrain}-{name}",
    })  # fmt: skip
    ensure_topics(config)
    return config


def stored_state(settings: Settings, topic: str | None = None) -> dict[int, dict[bytes, bytes]]:
    """Every partition hash the worker group wrote to Redis for ``topic`` (the events topic), by partition."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        prefix = f"{settings.state_prefix}:{settings.app_id}:state:{topic or settings.topic_events}:"
        return {int(key.decode().rsplit(":", 1)[1]): client.hgetall(key) for key in client.keys(prefix + "*")}
    finally:
        client.close()


def caught_up(settings: Settings, messages: int) -> bool:
    """The stored offsets cover all ``messages`` of the events topic (its offsets start at 0)."""
    try:
        states = stored_state(settings)
    except redis.exceptions.BusyLoadingError:  # a restarted redis-server still reading its append-only file
        return False
    return sum(int(state.get(b"offset", -1)) + 1 for state in states.values()) == messages


def persistent_redis() -> EmbeddedRedis:
    """A redis-server that keeps its data across a restart (append-only file, fsync always)."""
    data_dir = tempfile.mkdtemp(prefix="driftstream-redis-data-")
    return EmbeddedRedis(extra_args=("--dir", data_dir, "--appendonly", "yes", "--appendfsync", "always"))


def state_differences(got: dict[int, dict[bytes, bytes]], want: dict[int, dict[bytes, bytes]]) -> list[str]:
    """Where two stored states differ, as paths into the decoded snapshots (for failure messages)."""
    found: list[str] = []

    def walk(a: object, b: object, path: str) -> None:
        if len(found) >= 20:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key), b.get(key), f"{path}.{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            found.append(f"{path}: {str(a)[:80]} != {str(b)[:80]}")

    for partition in sorted(set(got) | set(want)):
        mine, theirs = got.get(partition, {}), want.get(partition, {})
        for field in sorted(set(mine) | set(theirs)):
            a, b = mine.get(field), theirs.get(field)
            if a != b and field.startswith(b"model:") and a and b:
                walk(msgpack.unpackb(a), msgpack.unpackb(b), f"[{partition}]{field.decode()}")
            elif a != b:
                found.append(f"[{partition}]{field.decode()}: {str(a)[:80]} != {str(b)[:80]}")
    return found
