"""A second worker joins: the models that move with their partitions leave the first worker's /metrics."""

from __future__ import annotations

import zlib

import pytest

from streams.simulate import Traffic, produce
from tests.integration.harness import WorkerProcess, caught_up, isolated_settings, stored_state, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4


def spread_models(per_partition: int = 2) -> tuple[str, ...]:
    """Model names that librdkafka's default partitioner (CRC32 of the key) spreads over every partition,
    so whichever partitions the second worker takes, models move with them (checked in the test)."""
    chosen: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    for i in range(1000):
        name = f"model-{i}"
        bucket = chosen[zlib.crc32(name.encode()) % PARTITIONS]
        if len(bucket) < per_partition:
            bucket.append(name)
    return tuple(sorted(name for names in chosen.values() for name in names))


MODELS = spread_models()
TRAFFIC = Traffic(models=MODELS, numeric=2, categorical=1, seed=5)


def test_models_that_move_to_another_worker_leave_the_first_workers_metrics(
    kafka_bootstrap: str, redis_url: str
) -> None:
    config = isolated_settings(kafka_bootstrap, redis_url, "reb", topic_partitions=PARTITIONS, reference_size=200,
                               broker_session_timeout=6.0, broker_rebalance_timeout=6.0)  # fmt: skip
    per_round = 150
    produce(config, TRAFFIC, count=per_round)
    first = WorkerProcess(config)
    second: WorkerProcess | None = None
    try:
        wait_until(lambda: caught_up(config, len(MODELS) * per_round), 60, "the first worker to apply everything",
                   (first,))  # fmt: skip
        models_in = {p: {f.decode().split(":", 1)[1] for f in fields if f.startswith(b"model:")}
                     for p, fields in stored_state(config).items()}  # fmt: skip
        assert sorted(models_in) == list(range(PARTITIONS)) and all(models_in.values()), models_in
        assert first.label_values("model") == set(MODELS)

        second = WorkerProcess(config)
        both = (first, second)
        wait_until(lambda: min(w.metric("driftstream_partitions_assigned") for w in both) >= 1
                   and sum(w.metric("driftstream_partitions_assigned") for w in both) == PARTITIONS, 60,
                   "the two workers to share the partitions", both)  # fmt: skip
        # New events give the second worker series of its own for the models it took.
        produce(config, TRAFFIC, count=per_round)
        wait_until(lambda: caught_up(config, 2 * len(MODELS) * per_round), 60, "both workers to apply the new events",
                   both)  # fmt: skip
        wait_until(lambda: bool(second.label_values("model")), 30, "the second worker to export its models", both)
        moved = second.label_values("model")
        assert moved is not None and moved < set(MODELS)
        # Whole partitions moved: the second worker's models are exactly those of some partitions.
        assert moved == set().union(*(m for m in models_in.values() if m & moved)), (moved, models_in)
        wait_until(lambda: not (first.label_values("model") or set()) & moved, 30,
                   "the first worker to drop the series of the models that moved", both)  # fmt: skip
        # And it still exports those it kept: the rebalance revoked every partition, yet only the
        # models that left lost their series.
        assert first.label_values("model") == set(MODELS) - moved
        assert first.metric("driftstream_events_consumed_total") > 0
        assert second.stop() == 0, second.tail()
        assert first.stop() == 0, first.tail()
    finally:
        first.stop()
        if second is not None:
            second.stop()
