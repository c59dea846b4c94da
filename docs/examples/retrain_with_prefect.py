"""Start a training run in Prefect for every retraining request driftstream publishes.

An example to copy, not a dependency of driftstream:

    pip install prefect confluent-kafka
    KAFKA=localhost:9092 python retrain_with_prefect.py

It expects a Prefect deployment per model named ``train/<model>`` whose flow takes the parameters
built below (``model``, ``model_version``, ``since``: the event time and the input topics' offsets
where the change began, ``reason``, ``request_id``). Requests are deduplicated twice: Prefect's
idempotency key is the request id (a request read again after a crash of this consumer, or
republished by a replaying worker, creates no second run), and offsets are committed only after
Prefect accepted the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

StartRun = Callable[..., Any]  # prefect.deployments.run_deployment, or anything with its signature


def start_training(request: dict[str, Any], run_deployment: StartRun) -> Any:
    """One training run for one request (``run_deployment`` does not wait for it to finish)."""
    return run_deployment(
        name=f"train/{request['model']}",
        parameters={
            "model": request["model"],
            "model_version": request["model_version"],
            "since": request["since"],  # {"event_time": ..., "offsets": {topic: {partition: offset}}}
            "reason": request["reason"],
            "request_id": request["request_id"],
        },
        idempotency_key=request["request_id"],
        flow_run_name=f"retrain-{request['model']}-{request['request_id'][:8]}",
        timeout=0,
    )


def main() -> None:
    from confluent_kafka import Consumer
    from prefect.deployments import run_deployment

    consumer = Consumer({
        "bootstrap.servers": os.environ.get("KAFKA", "localhost:9092"),
        "group.id": "retrain-with-prefect",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([os.environ.get("TOPIC", "retrain-requests")])
    try:
        while True:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            request = json.loads(message.value())
            flow_run = start_training(request, run_deployment)
            print(f"{request['model']}: training run {flow_run.id} for request {request['request_id']}")
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
