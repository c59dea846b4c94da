"""The Faust worker: consumes inference events in batches, publishes alerts.

Faust's per-message cost is fixed, so all real work happens per batch in
``streams.engine.Engine``; this module only moves records in and results out.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams.engine import Engine, Outputs, Record
from streams.kafka import faust_credentials
from streams.metrics import Metrics
from streams.settings import Settings
from streams.state import StateStore

log = logging.getLogger(__name__)


class Worker:
    """A Faust app wired to one Engine, its state store and its metrics registry."""

    def __init__(self, settings: Settings, store: StateStore, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.engine = Engine(settings, store, self.metrics)
        self._lock = asyncio.Lock()  # one of: a batch, a checkpoint, a revocation
        self._unpublished = False  # a batch changed state but its outputs are not all sent
        self._last_checkpoint = time.monotonic()
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
        s = self.settings
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{server}" for server in s.kafka_bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(s),
            value_serializer="raw",
            key_serializer="raw",
            web_host=s.web_host,
            web_port=s.web_port,
            datadir=s.data_dir or tempfile.mkdtemp(prefix="driftstream-"),
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.broker_session_timeout,
            broker_rebalance_timeout=s.broker_rebalance_timeout,
            broker_heartbeat_interval=s.broker_heartbeat_interval,
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.topic_replication,
            topic_allow_declare=False,
            stream_buffer_maxsize=max(4096, 2 * s.batch_max),
        )
        events = app.topic(s.topic_events, value_serializer="raw", key_serializer="raw")
        alerts = app.topic(s.topic_alerts, value_serializer="raw", key_serializer="raw")
        dlq = app.topic(s.topic_dlq, value_serializer="raw", key_serializer="raw")
        statistics = app.topic(s.topic_metrics, value_serializer="raw", key_serializer="raw")

        async def publish(out: Outputs) -> None:
            for key, value in out.alerts:
                await alerts.send(key=key, value=value)
            for dlq_key, value, headers in out.dlq:
                await dlq.send(key=dlq_key, value=value, headers=headers)
            for key, value in out.metrics:
                await statistics.send(key=key, value=value)

        @app.agent(events, name="driftstream-monitor")
        async def monitor(stream: faust.StreamT) -> None:
            async for batch in stream.take_events(s.batch_max, within=s.batch_within):
                records = [
                    Record(m.topic, m.partition, m.offset, m.timestamp, m.key, m.value)
                    for m in (event.message for event in batch)
                ]
                async with self._lock:
                    self._unpublished = True
                    out = await self.engine.process(records)
                    await publish(out)
                    self._unpublished = False
                    if time.monotonic() - self._last_checkpoint >= s.checkpoint_interval:
                        await self._checkpoint()

        @app.timer(s.checkpoint_interval)
        async def checkpoint_when_idle() -> None:
            async with self._lock:
                await self._checkpoint()

        @app.on_partitions_revoked.connect
        async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
            async with self._lock:
                # Save what is consistent, then always forget: whoever owns a partition next
                # (maybe this worker again) must start from the store, not from stale memory.
                await self._checkpoint()
                self.engine.forget((tp.topic, tp.partition) for tp in revoked)

        @app.on_before_shutdown.connect
        async def on_shutdown(sender: Any, **_: Any) -> None:
            async with self._lock:
                await self._checkpoint()

        @app.page("/metrics")
        async def metrics_page(web: Any, request: Any) -> Any:
            # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 anyway.
            content_type = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
            return web.bytes(generate_latest(self.registry), content_type=content_type)

        @app.page("/healthz")
        async def health_page(web: Any, request: Any) -> Any:
            ready = await self.is_ready()
            body = {"ready": ready, "partitions": len(self.engine.partitions)}
            return web.json(body, status=200 if ready else 503)

        return app

    async def is_ready(self) -> bool:
        ready = (not self.app.rebalancing) and await self.store.ping()
        self.metrics.ready.set(1 if ready else 0)
        return ready

    async def _checkpoint(self) -> None:
        """Flush what was published, then save state; skipped while outputs are pending."""
        if self._unpublished:
            return
        try:
            await self.app.producer.flush()
            await self.engine.checkpoint()
        except Exception as exc:  # noqa: BLE001 - a store outage must not kill the worker
            self.metrics.checkpoint_failures.inc()
            log.warning("checkpoint failed, will retry: %s", exc)
        else:
            self._last_checkpoint = time.monotonic()

    def run(self) -> None:
        """Run until stopped by a signal (blocks)."""
        worker = faust.Worker(self.app, loglevel=self.settings.log_level, quiet=True)
        worker.execute_from_commandline()
