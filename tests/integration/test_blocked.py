"""A partition whose state a newer release wrote (a rollback): left untouched, never committed, the
worker not ready and saying why, while the other partitions go on."""

from __future__ import annotations

import orjson
import pytest
import redis
from confluent_kafka import Producer

from streams.state import STATE_VERSION
from tests.integration.harness import WorkerProcess, committed_offsets, isolated_settings, stored_state, wait_until

pytestmark = pytest.mark.integration

EVENTS = 200  # per partition


def test_a_partition_with_a_newer_state_layout_is_left_alone_and_the_worker_is_not_ready(
    kafka_bootstrap: str, redis_url: str
) -> None:
    config = isolated_settings(kafka_bootstrap, redis_url, "blk", topic_partitions=2, reference_size=50,
                               broker_session_timeout=6.0, broker_rebalance_timeout=6.0)  # fmt: skip
    future = {b"v": str(STATE_VERSION + 1).encode(), b"offset": b"3", b"model:later": b"\x00a layout from later"}
    client = redis.Redis.from_url(redis_url)
    key = f"{config.state_prefix}:{config.app_id}:state:{config.topic_events}:0"
    client.hset(key, mapping=future)
    producer = Producer(config.confluent_config())
    for i in range(EVENTS):
        for partition, model in ((0, "later"), (1, "now")):
            event = {"model": model, "features": {"x": float(i % 7)}, "prediction": 0.5}
            producer.produce(config.topic_events, key=model.encode(), value=orjson.dumps(event), partition=partition)
    producer.flush(10)
    worker = WorkerProcess(config)
    try:
        # Partition 1 is applied, checkpointed and committed as usual...
        wait_until(lambda: committed_offsets(config).get(1) == EVENTS, 60, "partition 1 committed", (worker,))
        assert int(stored_state(config)[1][b"offset"]) == EVENTS - 1
        # ...while the worker says it is not ready, and which partition stops it.
        status, body = worker.healthz()
        assert status == 503 and body["store"] is True and body["broker"] is True, body
        assert body["blocked_partitions"] == [
            {"topic": config.topic_events, "partition": 0, "state_layout": STATE_VERSION + 1}
        ]
        assert worker.metric("driftstream_partitions_blocked") == 1
        assert worker.metric("driftstream_ready") == 0
        # Partition 0's events came in the same batches, but nothing of them was applied, written or
        # committed (acked, they would have been committed with partition 1's): Kafka keeps them
        # for a release that knows the layout.
        assert worker.metric("driftstream_events_consumed_total", {"model": "later"}) == 0
        assert client.hgetall(key) == future
        assert 0 not in committed_offsets(config)
        assert worker.stop() == 0
        assert client.hgetall(key) == future  # the shutdown checkpoint left it alone too
        assert 0 not in committed_offsets(config)
    finally:
        worker.stop()
        client.close()
