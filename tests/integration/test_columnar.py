"""End to end: columnar batches (Arrow and JSON) from EventProducer, through a real broker, to a real worker."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streams.columnar import ARROW_CONTENT_TYPE
from streams.engine import Engine, Record
from streams.metrics import Metrics
from streams.settings import Settings
from streams.simulate import Drift, Traffic, model_events, produce
from streams.state import MemoryStateStore
from tests.integration.harness import WorkerProcess, alerts_of, isolated_settings, read_topic

pytestmark = pytest.mark.integration

TRAFFIC = Traffic(models=("fraud",), numeric=6, categorical=2, seed=4,
                  drifts=(Drift("f1", start=6_000, kind="mean_shift", magnitude=1.0),
                          Drift("c1", start=6_000, kind="category_mix", magnitude=0.7)))  # fmt: skip
COUNT = 9_000


def row_alert_ids(settings: Settings) -> list[str]:
    """The alert ids an engine gives for the same events sent one per message to partition 0."""
    stream = model_events(TRAFFIC, 0)
    records = [Record(settings.topic_events, 0, offset, 1.8e9, b"fraud", orjson.dumps(next(stream)))
               for offset in range(COUNT)]  # fmt: skip
    engine = Engine(settings, MemoryStateStore(), Metrics(CollectorRegistry()))

    async def feed() -> list[str]:
        ids = []
        for start in range(0, COUNT, 1000):
            ids += [alert["alert_id"] for alert in (await engine.process(records[start : start + 1000])).alert_objects]
        return ids

    return asyncio.run(feed())


@pytest.mark.parametrize("form", ["arrow", "json"])
def test_columnar_batches_from_the_producer_alert_as_single_events_do(kafka_bootstrap: str, redis_url: str,
                                                                        form: str) -> None:  # fmt: skip
    settings = isolated_settings(kafka_bootstrap, redis_url, f"col-{form}", topic_partitions=1)
    assert produce(settings, TRAFFIC, count=COUNT, batch_size=700, format=form) == COUNT  # type: ignore[arg-type]
    sent = read_topic(settings, settings.topic_events)
    assert 13 <= len(sent) < COUNT // 100  # batches of at most 700 events (fewer when one lingered)
    content_types = {dict(m.headers() or []).get("content-type") for m in sent}
    assert content_types == ({ARROW_CONTENT_TYPE.encode()} if form == "arrow" else {None})
    worker = WorkerProcess(settings)
    try:
        worker.wait_consumed(len(sent))
        worker.wait_for(lambda: worker.metric("driftstream_events_consumed_total", {"model": "fraud"}) == COUNT, 60,
                        f"{COUNT} events applied")  # fmt: skip
        rejected = worker.metric("driftstream_events_rejected_total")
        alerts = alerts_of(settings)
    finally:
        worker.stop()
    assert rejected == 0
    assert {a["feature"] for a in alerts if a["status"] == "firing"} >= {"f1", "c1"}, alerts
    assert [a["alert_id"] for a in alerts] == row_alert_ids(settings)
