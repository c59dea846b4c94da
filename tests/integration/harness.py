"""Run real worker processes and read real topics."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.services import free_port, stop_process_group
from streams.settings import Settings


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

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of the samples of ``name`` whose label text contains ``labels``."""
        url = f"http://127.0.0.1:{self.settings.web_port}/metrics"
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            return -1.0
        total = 0.0
        for match in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M):
            if labels in (match.group(1) or ""):
                total += float(match.group(2))
        return total

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
