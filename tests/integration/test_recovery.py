"""Crashes and takeovers: state in Redis stays exactly-once (real broker, redis-server, SIGKILL).

The traffic is sliced by region (every model's config) and switches model version midway, so
segment and version monitors are recovered along with the whole-model ones.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator

import orjson
import pytest

from streams.settings import Settings
from streams.simulate import Drift, SegmentMix, Traffic, VersionSwitch, produce
from streams.state import decode
from tests.integration import harness
from tests.integration.harness import (
    WorkerProcess,
    caught_up,
    isolated_settings,
    read_topic,
    state_differences,
    stored_state,
    wait_until,
    worker_group,
)

pytestmark = pytest.mark.integration

MODELS = tuple(f"model-{i}" for i in range(6))
EVENTS = 50_004  # 8334 per model, one event per message
TRAFFIC = Traffic(models=MODELS, numeric=4, categorical=1, seed=21,
                  drifts=(Drift("f1", start=4000, kind="mean_shift", magnitude=1.0),
                          Drift("c0", start=6000, kind="category_mix", magnitude=0.5),
                          Drift("f2", start=5000, kind="mean_shift", magnitude=1.5, segment={"region": "eu"})),
                  segments=(SegmentMix("region", ("eu", "us"), (0.6, 0.4)),),
                  versions=(VersionSwitch(start=4500, version="2", shift=0.5),))  # fmt: skip


def run_to_the_end(config: Settings, timeout: float = 180) -> None:
    worker = WorkerProcess(config)
    try:
        wait_until(lambda: caught_up(config, EVENTS), timeout, "the checkpoint to cover every event", (worker,))
    finally:
        assert worker.stop() == 0, worker.tail()


def alert_ids(config: Settings) -> list[str]:
    return [orjson.loads(m.value())["alert_id"] for m in read_topic(config, config.topic_alerts)]


@pytest.fixture(scope="module")
def shared(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Settings, dict, list[str]]]:  # fmt: skip
    """The input, produced once, and what one uninterrupted worker makes of it."""
    config_file = tmp_path_factory.mktemp("recovery") / "driftstream.toml"
    config_file.write_text("".join(f'[models.{model}]\nsegments = ["region"]\n' for model in MODELS))
    with pytest.MonkeyPatch.context() as patch:
        env = harness.worker_env
        patch.setattr(harness, "worker_env", lambda s: {**env(s), "DRIFTSTREAM_CONFIG": str(config_file)})
        yield from _shared(kafka_bootstrap, redis_url)


def _shared(kafka_bootstrap: str, redis_url: str) -> Iterator[tuple[Settings, dict, list[str]]]:
    base = isolated_settings(kafka_bootstrap, redis_url, "rec", topic_partitions=4, reference_size=2000,
                             broker_session_timeout=6.0, broker_rebalance_timeout=6.0)  # fmt: skip
    assert produce(base, TRAFFIC, count=EVENTS // len(MODELS), batch_size=1) == EVENTS
    reference = worker_group(base, "straight")
    run_to_the_end(reference)
    state, alerts = stored_state(reference), alert_ids(reference)
    assert len(state) >= 3, "the models should spread over most partitions"
    assert len(alerts) >= 5, "the drifts should fire alerts to compare"
    assert len(set(alerts)) == len(alerts)
    segmented = [a for a in map(orjson.loads, (m.value() for m in read_topic(reference, reference.topic_alerts)))
                 if a["segment"] is not None]  # fmt: skip
    assert segmented, "the drift in region eu should fire segment alerts to compare"
    # The whole model's own checks take part: the schema learnt, the PCA fitted, calibrated and judging.
    snapshots = [decode(blob) for fields in state.values() for name, blob in fields.items()
                 if name.startswith(b"model:")]  # fmt: skip
    assert len(snapshots) == len(MODELS)
    for snapshot in snapshots:
        assert snapshot["schema"]["reference"] and snapshot["freshness"]["last_index"] == EVENTS // len(MODELS) - 1
        assert snapshot["multivariate"]["calibration"]["done"] and snapshot["multivariate"]["latest"]
    yield base, state, alerts


def test_kill_9_at_random_points_changes_no_state_and_no_alert(shared) -> None:
    base, reference_state, reference_alerts = shared
    config = worker_group(base, "killed")
    rng = random.Random(4)
    kills = []
    while len(kills) < 6:
        worker = WorkerProcess(config)
        target = rng.randint(800, 9000)  # messages this life reads (replays included) before the kill
        try:
            wait_until(lambda w=worker, n=target: w.metric("driftstream_messages_consumed_total") >= n
                       or caught_up(config, EVENTS), 120, f"{target} messages consumed", (worker,))  # fmt: skip
        finally:
            worker.stop(signal.SIGKILL)
        if caught_up(config, EVENTS):
            break  # the stream ran out before six kills: the test would prove less than it says
        offsets = {p: int(h[b"offset"]) for p, h in stored_state(config).items()}
        kills.append((target, offsets))
    assert len(kills) == 6, f"only {len(kills)} kills before the end of the stream"
    run_to_the_end(config)
    assert stored_state(config) == reference_state, state_differences(stored_state(config), reference_state)
    ids = alert_ids(config)
    assert set(ids) == set(reference_alerts), kills
    print(f"kill points (messages read in that life, stored offsets at the kill): {kills}; "
          f"{len(ids)} alerts published, {len(set(ids))} distinct, as in the uninterrupted run")


def test_a_second_worker_takes_over_the_partitions_of_a_killed_one(shared) -> None:
    base, reference_state, reference_alerts = shared
    config = worker_group(base, "pair")
    first, second = WorkerProcess(config), WorkerProcess(config)
    try:
        both = (first, second)
        wait_until(lambda: all(w.metric("driftstream_partitions_assigned") >= 1 for w in both), 60,
                   "both workers to own partitions", both)  # fmt: skip
        wait_until(lambda: first.metric("driftstream_messages_consumed_total") >= 3000, 60,
                   "the first worker to be well into its partitions", both)  # fmt: skip
        owned = first.metric("driftstream_partitions_assigned")
        first.stop(signal.SIGKILL)
        wait_until(lambda: second.metric("driftstream_partitions_assigned") == 4, 60,
                   "the survivor to own all four partitions", (second,))  # fmt: skip
        wait_until(lambda: caught_up(config, EVENTS), 180, "the checkpoint to cover every event", (second,))
    finally:
        first.stop(signal.SIGKILL)
        second.stop()
    assert owned >= 1
    assert stored_state(config) == reference_state, state_differences(stored_state(config), reference_state)
    assert set(alert_ids(config)) == set(reference_alerts)
