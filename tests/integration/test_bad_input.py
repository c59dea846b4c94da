"""A running worker under a property-based sweep of bad input (hypothesis, real broker and Redis).

Every message is accounted for: each element either reaches a monitor or the DLQ
with a reason; good events around bad ones are processed; the worker never
exits and its memory stays bounded.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.decode import REASONS, Limits, decode_message
from streams.settings import Settings
from tests.integration.harness import WorkerProcess, isolated_settings, read_topic, wait_until

pytestmark = pytest.mark.integration

MAX_MODELS = 20
MB = 1_000_000


class Sweep:
    """The worker under test, and the decoder as the oracle of what it must do with each message."""

    def __init__(self, config: Settings) -> None:
        self.config = config
        self.worker = WorkerProcess(config)
        self.producer = Producer({**config.confluent_config(), "message.max.bytes": 12 * MB, "linger.ms": 5})
        self.limits = Limits(config.max_message_bytes, config.max_events_per_message, config.max_name_length,
                             config.max_string_length)  # fmt: skip
        self.admitted: set[str] = set()
        self.sent = 0
        self.events = 0  # expected to reach a monitor
        self.rejected = 0  # expected in the DLQ

    def send(self, values: list[bytes]) -> None:
        for value in values:
            self.producer.produce(self.config.topic_events, value=value)
            self.producer.poll(0)
            events, rejections = decode_message(value, self.limits)
            self.rejected += len(rejections)
            for event in events:
                if event.model in self.admitted or len(self.admitted) < MAX_MODELS:
                    self.admitted.add(event.model)
                    self.events += 1
                else:
                    self.rejected += 1  # too_many_models
        self.sent += len(values)
        self.producer.flush(30)

    def settle(self) -> None:
        """Wait until the worker read everything sent, then check every element was accounted for."""
        worker = self.worker
        wait_until(lambda: worker.metric("driftstream_messages_consumed_total") >= self.sent, 120,
                   f"{self.sent} messages read", (worker,))  # fmt: skip
        assert worker.metric("driftstream_events_consumed_total") == self.events
        assert worker.metric("driftstream_events_rejected_total") == self.rejected
        dlq = read_topic(self.config, self.config.topic_dlq, timeout=2.0)
        assert len(dlq) == self.rejected
        for message in dlq:
            headers = dict(message.headers())
            assert headers["driftstream-reason"].decode() in REASONS
            assert headers["driftstream-detail"] and headers["driftstream-source-offset"]
            assert len(message.value()) <= self.config.dlq_max_value_bytes


@pytest.fixture(scope="module")
def sweep(kafka_bootstrap: str, redis_url: str) -> Iterator[Sweep]:
    config = isolated_settings(kafka_bootstrap, redis_url, "bad", topic_partitions=1, max_models=MAX_MODELS,
                               reference_size=1000)  # fmt: skip
    sweep = Sweep(config)
    try:
        # A model name that Prometheus escapes (brace, quote, newline): its events are counted too.
        odd = orjson.dumps({"model": 'odd}"\n{name', "features": {"x": 1.0}})
        sweep.send([good(i) for i in range(200)] + [odd] * 3)
        sweep.settle()
        yield sweep
        assert sweep.worker.alive()
    finally:
        sweep.worker.stop()


def good(i: int) -> bytes:
    return orjson.dumps({"model": "good", "event_id": str(i), "features": {"x": random.gauss(0, 1), "c": "abc"[i % 3]}})


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
)  # fmt: skip
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)  # fmt: skip
models = st.one_of(st.sampled_from(["good"] + [f"unknown-{i}" for i in range(60)]), json_values, st.text(max_size=300))
events = st.fixed_dictionaries(
    {"model": models},
    optional={
        "features": st.one_of(st.dictionaries(st.text(max_size=12), json_values, max_size=6), json_values),
        "prediction": json_values, "timestamp": json_values, "event_id": json_values, "model_version": json_values,
    },
)  # fmt: skip
NASTY = [
    b"", b"[]", b"{}", b"null", b"\xff\xfe", b"NaN", b"[" * 100_000 + b"]" * 100_000, b'{"model": "good"',
    b'{"model": "good", "features": {"x": NaN}}', b'{"model": "good", "features": {"x": Infinity}}',
    b'{"model": "good", "features": {"x": -Infinity}}', b'{"model": "good", "features": {"x": 1e400}}',
    b'{"model": "good", "features": {"x": 123456789012345678901234567890123}}',
    b'{"model": "good", "features": {"x": {"deep": [[[[[[1]]]]]]}}}', b'[{"model": "good", "features": {}}]',
]  # fmt: skip
messages = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(NASTY),
    json_values.map(lambda value: json.dumps(value).encode()),
    events.map(lambda event: json.dumps(event).encode()),
    st.lists(events, min_size=0, max_size=30).map(lambda batch: json.dumps(batch).encode()),
)


@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])  # fmt: skip
@given(bad=st.lists(messages, min_size=20, max_size=60))
def test_bad_messages_go_to_the_dlq_and_good_ones_around_them_are_processed(sweep: Sweep, bad: list[bytes]) -> None:
    interleaved = [value for pair in zip([good(i) for i in range(len(bad))], bad, strict=True) for value in pair]
    sweep.send(interleaved + [good(-1)])
    sweep.settle()


def test_huge_messages_and_extreme_cardinality_keep_memory_bounded(sweep: Sweep) -> None:
    before = sweep.worker.rss_bytes()
    filler = "x" * 950
    heavy = orjson.dumps([{"model": "good", "features": {"x": 1.0, "pad": filler}} for _ in range(10_000)])
    assert 9.5 * MB < len(heavy) < sweep.config.max_message_bytes  # a valid 10 MB envelope: decoded, all applied
    too_big = b'{"model": "good", "features": {"x": "' + b"y" * (sweep.config.max_message_bytes + 10) + b'"}}'
    letters = string.ascii_letters
    distinct = [
        orjson.dumps([{"model": "good", "features": {"c": "".join(random.choices(letters, k=24))}}
                      for _ in range(10_000)])
        for _ in range(30)
    ]  # 300,000 categories never seen before, on one feature  # fmt: skip
    sweep.send([heavy, too_big, good(0), *distinct, heavy, good(1)])
    sweep.settle()
    after = sweep.worker.rss_bytes()
    print(f"worker RSS {before / MB:.0f} MB before, {after / MB:.0f} MB after 2 x 10 MB envelopes, "
          f"a {len(too_big) / MB:.1f} MB message and 300,000 distinct categories")  # fmt: skip
    assert after < 500 * MB
    truncated = [m for m in read_topic(sweep.config, sweep.config.topic_dlq, timeout=2.0)
                 if dict(m.headers())["driftstream-reason"] == b"message_too_large"]  # fmt: skip
    assert len(truncated) == 1
    assert dict(truncated[0].headers())["driftstream-truncated-from"] == str(len(too_big)).encode()
