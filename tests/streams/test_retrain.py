"""Retraining requests through the engine: alerts read back from the alert topic, against Redis and memory."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from detectors.monitors import Alert
from streams.alerts import to_wire
from streams.engine import Engine, Outputs, Record
from streams.metrics import Metrics
from streams.settings import Settings
from streams.state import StateStore

T0 = 1.8e9
EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "retrain_with_prefect.py"


def settings(unique: str, **overrides: Any) -> Settings:
    values = dict(app_id=f"retrain-{unique}", state_prefix=f"t-{unique}", topic_events="events",
                  topic_labels="labels", topic_alerts="alerts", retrain_cooldown=3600.0)  # fmt: skip
    return Settings(**(values | overrides))


def wire(kind: str, feature: str | None, index: int, detected_at: float, status: str = "firing",
         model: str = "churn") -> bytes:  # fmt: skip
    alert = Alert(kind, status, "critical", feature, "ddm" if kind == "concept_drift" else "ks", 0.3, 0.2, None,
                  index, 200, T0 + index - 200, T0 + index, {}, {}, f"{feature or 'the model'} changed")  # fmt: skip
    return orjson.dumps(to_wire(alert, model, "v1", "events", 0, detected_at))


def records(values: list[bytes], start: int = 0) -> list[Record]:
    return [Record("alerts", 0, start + i, T0 + i, b"churn", value) for i, value in enumerate(values)]


def engine(config: Settings, store: StateStore, now: float = T0 + 5) -> Engine:
    return Engine(config, store, Metrics(CollectorRegistry()), clock=lambda: now)


def requested(out: Outputs) -> list[dict[str, Any]]:
    return [request for _, request, _ in out.requests]


def counted(engine: Engine) -> dict[str, float]:
    return {sample.labels["outcome"]: sample.value for metric in engine.metrics.registry.collect()
            if metric.name == "driftstream_retrain_requests" for sample in metric.samples
            if sample.name.endswith("_total")}  # fmt: skip


STREAM = [
    wire("data_drift", "f2", 1000, T0),
    wire("data_drift", "c0", 1100, T0 + 1),
    wire("concept_drift", None, 1500, T0 + 2),  # the trigger
    wire("performance", None, 1600, T0 + 3),  # within the cooldown: suppressed
]


def test_a_concept_drift_alert_read_back_requests_a_retraining(unique: str, store_factory) -> None:
    config = settings(unique)
    worker = engine(config, store_factory(config))
    out = asyncio.run(worker.process(records(STREAM)))
    (request,) = requested(out)
    alerts = [orjson.loads(value) for value in STREAM]
    assert request["alert_ids"] == [alerts[2]["alert_id"], alerts[0]["alert_id"], alerts[1]["alert_id"]]
    assert request["model"] == "churn" and request["model_version"] == "v1"
    assert request["since"] == {"event_time": "2027-01-15T08:21:40.000Z", "offsets": {}}  # T0 + 1300: its window
    assert request["created_at"] == "2027-01-15T08:00:05.000Z" and request["cooldown_seconds"] == 3600.0
    assert request["trigger"]["type"] == "concept_drift" and request["trigger"]["detector"] == "ddm"
    assert request["reason"].startswith("Retrain churn version v1: the relation of its inputs to the labels changed")
    assert out.requests[0][0] == b"churn" and out.requests[0][2] == T0 + 1300
    assert counted(worker) == {"published": 1.0, "suppressed": 1.0}
    assert not out.alerts and not out.dlq  # reading alerts publishes no alert


def test_a_replay_after_a_crash_requests_again_with_the_same_id(unique: str, store_factory) -> None:
    """Until a checkpoint covers the trigger; the cooldown is checkpointed too."""
    config = settings(unique)

    async def scenario() -> None:
        first = engine(config, store_factory(config))
        await first.process(records(STREAM[:2]))
        await first.checkpoint()
        (published,) = requested(await first.process(records(STREAM[2:], start=2)))
        # Crashed before its checkpoint: the next owner replays from offset 2.
        second = engine(config, store_factory(config), now=T0 + 60)
        (replayed,) = requested(await second.process(records(STREAM[2:], start=2)))
        assert replayed["request_id"] == published["request_id"] and replayed["alert_ids"] == published["alert_ids"]
        await second.checkpoint()
        # After the checkpoint nothing is requested again, even from a third owner reading it all.
        third = engine(config, store_factory(config), now=T0 + 120)
        assert not requested(await third.process(records(STREAM)))
        # The cooldown is in the checkpointed state: a new trigger within it is suppressed, after it published.
        later = [wire("concept_drift", None, 1700, T0 + 1000), wire("concept_drift", None, 5000, T0 + 3700)]
        out = await third.process(records(later, start=4))
        assert [r["trigger"]["detected_at"] for r in requested(out)] == ["2027-01-15T09:01:40.000Z"]
        assert counted(third) == {"suppressed": 1.0, "published": 1.0}

    asyncio.run(scenario())


def test_a_bad_alert_message_goes_to_the_dlq_and_the_rest_still_count(unique: str, store_factory) -> None:
    config = settings(unique)
    worker = engine(config, store_factory(config))
    bad = [b"{not json", orjson.dumps({"alert_id": "x", "model": "churn"}), orjson.dumps([1])]
    out = asyncio.run(worker.process(records([*bad, *STREAM])))
    assert [dict(headers)["driftstream-reason"] for _, _, headers in out.dlq] == [b"invalid_alert"] * 3
    assert dict(out.dlq[1][2])["driftstream-detail"] == b"field 'type' is missing"
    assert dict(out.dlq[0][2])["driftstream-source-topic"] == b"alerts"
    assert len(out.requests) == 1


def test_retrain_policies_are_bounded_by_max_models(unique: str, store_factory) -> None:
    config = settings(unique, max_models=2)
    worker = engine(config, store_factory(config))
    values = [wire("concept_drift", None, 10, T0, model=f"m{i}") for i in range(4)]
    out = asyncio.run(worker.process(records(values)))
    assert len(out.requests) == 2
    assert [dict(headers)["driftstream-reason"] for _, _, headers in out.dlq] == [b"too_many_models"] * 2


def test_the_prefect_example_starts_one_run_per_request_keyed_by_its_id(unique: str, store_factory) -> None:
    """docs/examples/retrain_with_prefect.py, fed a request as the engine publishes it (Prefect itself is
    not a dependency: its run_deployment is recorded, keyword for keyword)."""
    spec = importlib.util.spec_from_file_location("retrain_with_prefect", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    config = settings(unique)
    (request,) = requested(asyncio.run(engine(config, store_factory(config)).process(records(STREAM))))
    calls: list[dict[str, Any]] = []
    example.start_training(orjson.loads(orjson.dumps(request)), lambda **kwargs: calls.append(kwargs))
    (call,) = calls
    assert call["name"] == "train/churn" and call["idempotency_key"] == request["request_id"]
    assert call["parameters"]["since"] == request["since"] and call["parameters"]["model_version"] == "v1"
    assert call["timeout"] == 0 and call["flow_run_name"] == f"retrain-churn-{request['request_id'][:8]}"


def test_retrain_policies_do_not_take_the_monitored_models_places(unique: str, store_factory) -> None:
    config = settings(unique, max_models=2)
    worker = engine(config, store_factory(config))
    policies = [wire("concept_drift", None, 10, T0, model=f"m{i}") for i in range(2)]
    events = [Record("events", 0, i, T0, b"x", orjson.dumps({"model": f"e{i}", "features": {"x": 1.0}}))
              for i in range(2)]  # fmt: skip
    out = asyncio.run(worker.process([*records(policies), *events]))
    assert not out.dlq and len(out.requests) == 2
    assert {model for state in worker.partitions.values() for model in state.monitors} == {"e0", "e1"}
